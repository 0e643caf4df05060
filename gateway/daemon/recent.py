"""The journal rows this process has just written, kept so the pipeline need not read them back.

On a busy portal every read is journaled and then read back by the pipeline a few milliseconds
later: the SELECT and the decoding of each row into an event cost about a tenth of the daemon's
CPU. The rows are still written first (the journal is what survives a crash), but the pipeline
takes the events it would have decoded from here when they follow its cursor without a hole.
Anything else (a restart, rows dropped here because the pipeline fell far behind) is read from
SQLite as before: this is a cache keyed by journal id, never the truth.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence

from gateway.domain.events import RawEvent


class RecentJournal:
    """Recently journaled events by id, at most `max_events` of them (the oldest go first)."""

    def __init__(self, max_events: int) -> None:
        self._max = max_events
        self._batches: deque[tuple[int, Sequence[RawEvent]]] = deque()
        self._held = 0

    def __len__(self) -> int:
        return self._held

    def add(self, first_id: int, events: Sequence[RawEvent]) -> None:
        """`events` were journaled with the ids first_id, first_id + 1, ... in one transaction."""
        if not events:
            return
        self._batches.append((first_id, events))
        self._held += len(events)
        while self._held > self._max:
            _, dropped = self._batches.popleft()
            self._held -= len(dropped)

    def take(self, after_id: int, limit: int) -> tuple[list[tuple[int, RawEvent]], bool]:
        """The rows after `after_id`, as `Buffer.read_raw` would return them, up to `limit`.

        The flag says whether those rows end where this cache ends: False when a hole (rows not
        held here) or the limit stopped the taking, so the journal may hold more right now.
        """
        rows: list[tuple[int, RawEvent]] = []
        batches = self._batches
        next_id = after_id + 1
        while batches:
            first_id, events = batches[0]
            end_id = first_id + len(events)  # one past the batch's last id
            if end_id <= next_id:
                batches.popleft()  # the pipeline is past it
                self._held -= len(events)
                continue
            if first_id > next_id:
                return rows, False  # a hole: those rows are in SQLite only
            room = limit - len(rows)
            if room <= 0:
                return rows, False
            start = next_id - first_id
            taken = events[start : start + room]
            rows.extend(zip(range(next_id, next_id + len(taken)), taken, strict=True))
            next_id += len(taken)
        return rows, True

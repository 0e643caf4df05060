"""The go-back-N window: what is in flight, what to send next, and when to go back.

Pure state and no I/O: the forwarder tells it what the broker answered and what time it is, and
hands it a `publish` function that returns the packet id. Every fresh link starts with nothing in
flight at the oldest undelivered row. After a link died with rows unanswered, or after the broker
refused a row, the window is one row wide (a probe) until a row is taken; a refusal also pauses new
rows until a deadline and then goes back to the oldest undelivered row.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator, Sequence

from gateway.sync.outbox import OutboxRowLike

FETCH_ROWS = 1000
"""Rows read from the outbox at a time; the next read starts when fewer than half are left."""

RowInFlight = tuple[OutboxRowLike, bool]
"""A row the broker has not answered yet, and whether it was sent again (a resend)."""


class Window:
    """The in-flight window over the outbox rows of one link after another."""

    def __init__(self, max_inflight: int) -> None:
        self._max_inflight = max_inflight
        self.size = max_inflight
        self.last_progress_s = 0.0
        # mid -> (row, is_resend) and mid -> topic, for what the broker has not answered yet.
        self._rows_in_flight: dict[int, RowInFlight] = {}
        self._others_in_flight: dict[int, str] = {}
        self._rows: deque[OutboxRowLike] = deque()
        self._fetched_upto = 0
        self._caught_up = False
        self._generation = 0
        # A refusal: no new rows until `_paused_until_s`, then back to the oldest undelivered row.
        self._paused_until_s = 0.0
        self._going_back = False
        # One row at a time after a link died with rows unanswered, or after a refusal.
        self._probe = False
        self._row_answered = False

    # -- a link begins and ends -----------------------------------------------------------------

    def start(self, receive_maximum: int, now_s: float) -> None:
        """A fresh link: nothing in flight, read again from the oldest undelivered row."""
        # After a link that dropped with rows in flight and no answer for any of them, send one
        # row first: mosquitto 2.0 closes the link right after refusing a publish (ACL) and its
        # 0x87 PUBACK is lost when more packets were queued behind the refused one.
        self.size = 1 if self._probe else self._full_size(receive_maximum)
        self._row_answered = False
        self._rows_in_flight.clear()
        self._others_in_flight.clear()
        self._rows.clear()
        self._fetched_upto = 0
        self._caught_up = False
        # A refusal's pause outlives the link (mosquitto 2.0 drops the link after a 0x87 PUBACK).
        self._going_back = self._paused_until_s > now_s
        self.last_progress_s = now_s

    def end(self) -> None:
        """The link is gone; whatever it had in flight is forgotten (the outbox still has it)."""
        self._probe = self._probe or (bool(self._rows_in_flight) and not self._row_answered)
        self._rows_in_flight.clear()
        self._others_in_flight.clear()

    # -- reading the outbox ---------------------------------------------------------------------

    def notify(self) -> None:
        """New rows were committed: the next read may find more."""
        self._generation += 1
        self._caught_up = False

    def needs_rows(self, stopping: bool) -> bool:
        """Whether to read more rows from the outbox now."""
        return (
            not self._caught_up
            and not self._going_back
            and not stopping
            and len(self._rows) < FETCH_ROWS // 2
        )

    def read_from(self) -> tuple[int, int]:
        """Where the next read starts (`seq` after which), and the notify generation it covers."""
        return self._fetched_upto, self._generation

    def fetched(
        self,
        rows: Sequence[OutboxRowLike],
        generation: int,
        keep: Callable[[OutboxRowLike], bool] | None = None,
    ) -> None:
        """Queue rows read from `read_from()`; fewer than a full read means caught up."""
        if rows:
            self._fetched_upto = rows[-1].seq
        self._rows.extend(rows if keep is None else filter(keep, rows))
        if len(rows) < FETCH_ROWS and generation == self._generation:
            self._caught_up = True

    # -- sending --------------------------------------------------------------------------------

    @property
    def in_flight(self) -> int:
        """Publishes the broker has not answered yet (rows and others)."""
        return len(self._rows_in_flight) + len(self._others_in_flight)

    @property
    def rows_in_flight(self) -> int:
        """Rows the broker has not answered yet."""
        return len(self._rows_in_flight)

    @property
    def going_back(self) -> bool:
        """A row was refused: no new rows until the window goes back."""
        return self._going_back

    def has_room(self) -> bool:
        """Whether one more publish fits in the window."""
        return len(self._rows_in_flight) + len(self._others_in_flight) < self.size

    def send_rows(self, publish: Callable[[bytes], int], limit: int, skip_upto: int) -> int:
        """Send queued rows (at most `limit`, skipping `seq <= skip_upto`); return how many."""
        rows = self._rows
        in_flight = self._rows_in_flight
        room = min(self.size - len(in_flight) - len(self._others_in_flight), limit)
        sent = 0
        while sent < room and rows:
            row = rows.popleft()
            if row.seq <= skip_upto:
                continue
            in_flight[publish(row.payload)] = (row, False)
            sent += 1
        return sent

    def send_again(
        self, publish: Callable[[bytes], int], next_row: Callable[[], OutboxRowLike | None]
    ) -> int:
        """Send rows again while there is room (`next_row` gives them); return how many."""
        sent = 0
        while self.has_room():
            row = next_row()
            if row is None:
                break
            self._rows_in_flight[publish(row.payload)] = (row, True)
            sent += 1
        return sent

    def sent_other(self, mid: int, label: str) -> None:
        """Something that is not a row (a control message, a replay) went out as `mid`."""
        self._others_in_flight[mid] = label

    def is_in_flight(self, mid: int) -> bool:
        """Whether the broker has not answered `mid` yet."""
        return mid in self._rows_in_flight or mid in self._others_in_flight

    def first_sends(self) -> Iterator[OutboxRowLike]:
        """Rows in flight for the first time in this link (not resends)."""
        return (row for row, is_resend in self._rows_in_flight.values() if not is_resend)

    # -- the broker answers ---------------------------------------------------------------------

    def answered(self, mid: int, now_s: float) -> RowInFlight | str | None:
        """The broker answered `mid`: the row (and whether resent), the other's label, or None."""
        self.last_progress_s = now_s
        entry = self._rows_in_flight.pop(mid, None)
        if entry is not None:
            self._row_answered = True
            return entry
        return self._others_in_flight.pop(mid, None)

    def accepted(self, receive_maximum: int) -> None:
        """The broker took a row: a probe is over, back to the full window."""
        if self._probe:
            self._probe = False
            self.size = self._full_size(receive_maximum)

    def refused(self, now_s: float, pause_s: float) -> None:
        """The broker refused a row: probe from now on; unless already going back, pause first."""
        self._probe = True
        if not self._going_back:
            self._paused_until_s = now_s + pause_s
            self._going_back = True

    def go_back_due(self, now_s: float) -> bool:
        """Whether the pause after a refusal is over and nothing is in flight."""
        return self._going_back and not self._rows_in_flight and now_s >= self._paused_until_s

    def go_back(self) -> None:
        """Start again at the oldest undelivered row."""
        self._rows.clear()
        self._fetched_upto = 0
        self._caught_up = False
        self._going_back = False

    # -- time -----------------------------------------------------------------------------------

    def stalled(self, now_s: float, stall_timeout_s: float) -> bool:
        """Whether something is in flight and the broker answered nothing for `stall_timeout_s`."""
        if not self._rows_in_flight and not self._others_in_flight:
            return False
        return now_s - self.last_progress_s >= stall_timeout_s

    def deadlines_s(self, stall_timeout_s: float) -> list[float]:
        """When the window next needs a look: a stall, or the end of a refusal's pause."""
        deadlines = []
        if self._rows_in_flight or self._others_in_flight:
            deadlines.append(self.last_progress_s + stall_timeout_s)
        if self._going_back and not self._rows_in_flight:
            deadlines.append(self._paused_until_s)
        return deadlines

    def _full_size(self, receive_maximum: int) -> int:
        return max(1, min(self._max_inflight, receive_maximum))

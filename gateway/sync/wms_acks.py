"""delivery = "wms": rows the broker took but the WMS has not acked yet, and which to send again.

A row waits here from its PUBACK until the WMS acks its id (or a `seq` at or above it); a row not
acked within `ack_timeout_s` is sent again with the same payload. An ack can overtake the PUBACK of
the row it names, so acks for rows still in flight are remembered until that PUBACK.
"""

from __future__ import annotations

import sys
from collections import OrderedDict, deque
from collections.abc import Iterable
from dataclasses import dataclass

from gateway.sync.outbox import OutboxRowLike

MAX_UNACKED = 4000
"""Rows that may wait for the WMS's ack at any time (PUBACKed or still in flight)."""


@dataclass(slots=True)
class _Unacked:
    row: OutboxRowLike
    sent_at_s: float


class WmsAcks:
    """The rows waiting for the WMS's ack, oldest send first, and the rows due to be sent again."""

    def __init__(self) -> None:
        self._unacked: OrderedDict[int, _Unacked] = OrderedDict()
        self._unacked_ids: dict[str, int] = {}
        self._acked_upto = 0
        self._acked_in_flight: set[int] = set()
        self._resend: deque[OutboxRowLike] = deque()

    def __len__(self) -> int:
        """Rows PUBACKed and waiting for the WMS's ack."""
        return len(self._unacked)

    def limits(self, rows_in_flight: int, *, wms: bool) -> tuple[int, int]:
        """How many new rows may be sent, and up to which `seq` they are acked already."""
        if not wms:
            # delivery = "broker": acks mark rows delivered but never hold new rows back.
            return sys.maxsize, -1
        return MAX_UNACKED - len(self._unacked) - rows_in_flight, self._acked_upto

    def still_unacked(self, row: OutboxRowLike) -> bool:
        """Whether a row read from the outbox is neither acked nor already waiting for an ack."""
        return row.seq > self._acked_upto and row.seq not in self._unacked

    def link_started(self) -> None:
        """A fresh link: nothing is in flight, so no ack can overtake a PUBACK."""
        self._acked_in_flight.clear()

    def published(self, row: OutboxRowLike, now_s: float) -> bool:
        """A first copy was PUBACKed: wait for its ack; True when it is the only row waiting."""
        if row.seq in self._acked_in_flight:
            self._acked_in_flight.discard(row.seq)
            return False
        was_empty = not self._unacked
        self._unacked[row.seq] = _Unacked(row, now_s)
        self._unacked_ids[row.id] = row.seq
        return was_empty

    def acked_ids(self, ids: tuple[str, ...], in_flight: Iterable[OutboxRowLike]) -> None:
        """The WMS acked these movement ids (`in_flight`: first sends not PUBACKed yet)."""
        for acked_id in ids:
            seq = self._unacked_ids.pop(acked_id, None)
            if seq is not None:
                self._unacked.pop(seq, None)
        wanted = set(ids)
        for row in in_flight:
            if row.id in wanted:
                self._acked_in_flight.add(row.seq)

    def acked_upto_seq(self, upto: int, in_flight: Iterable[OutboxRowLike]) -> None:
        """The WMS acked every row with `seq <= upto` (`in_flight`: as for `acked_ids`)."""
        self._acked_upto = max(self._acked_upto, upto)
        for seq in [s for s in self._unacked if s <= upto]:
            entry = self._unacked.pop(seq)
            self._unacked_ids.pop(entry.row.id, None)
        for row in in_flight:
            if row.seq <= upto:
                self._acked_in_flight.add(row.seq)

    def expire(self, now_s: float, ack_timeout_s: float) -> None:
        """Queue rows not acked within `ack_timeout_s` to be sent again; restart their clocks."""
        unacked = self._unacked
        while unacked:
            seq, entry = next(iter(unacked.items()))
            if now_s - entry.sent_at_s < ack_timeout_s:
                break
            entry.sent_at_s = now_s
            unacked.move_to_end(seq)
            self._resend.append(entry.row)

    def next_resend(self) -> OutboxRowLike | None:
        """The next row to send again that still waits for an ack, or None."""
        while self._resend:
            row = self._resend.popleft()
            if row.seq in self._unacked:
                return row
        return None

    def deadline_s(self, ack_timeout_s: float) -> float | None:
        """When the oldest waiting row is due to be sent again, or None."""
        if not self._unacked:
            return None
        oldest = next(iter(self._unacked.values()))
        return oldest.sent_at_s + ack_timeout_s

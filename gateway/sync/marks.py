"""Deliveries collected for a few milliseconds and written to the outbox in one go."""

from __future__ import annotations

from gateway.sync.outbox import OutboxSource

MARK_BATCH = 500
"""Marks written at once at the latest."""

MARK_DELAY_S = 0.005
"""How long the first mark of a batch waits for others."""


class MarkBatch:
    """Rows to mark delivered: seqs from PUBACKs, ids and an `upto_seq` from the WMS's acks."""

    def __init__(self) -> None:
        self.delivered = 0
        self._seqs: list[int] = []
        self._ids: list[str] = []
        self._upto: int | None = None
        self._first_s: float | None = None

    @property
    def pending(self) -> bool:
        """Whether anything waits to be written."""
        return bool(self._seqs or self._ids or self._upto is not None)

    def add_seq(self, seq: int, now_s: float) -> bool:
        """The broker took this row; True when the writer should look (a new or a full batch)."""
        seqs = self._seqs
        first = not seqs
        if first:
            self._first_s = now_s
        seqs.append(seq)
        return first or len(seqs) >= MARK_BATCH

    def add_ack(self, ids: tuple[str, ...], upto: int | None, now_s: float) -> None:
        """The WMS acked these ids, or every row up to `upto`."""
        self._ids.extend(ids)
        if upto is not None:
            self._upto = upto if self._upto is None else max(self._upto, upto)
        if self._first_s is None:
            self._first_s = now_s

    def due(self, now_s: float, stopping: bool) -> bool:
        """Whether to write now: a full batch, stopping, or the first mark waited long enough."""
        if not self.pending:
            return False
        if len(self._seqs) >= MARK_BATCH or stopping:
            return True
        return self._first_s is None or now_s - self._first_s >= MARK_DELAY_S

    def deadline_s(self, now_s: float) -> float | None:
        """When the batch is due by time, or None when nothing waits."""
        if not self.pending:
            return None
        return (self._first_s or now_s) + MARK_DELAY_S

    async def flush(self, outbox: OutboxSource) -> None:
        """Write everything collected to the outbox; what an error interrupts is kept."""
        while self.pending:
            seqs, self._seqs = self._seqs, []
            ids, self._ids = self._ids, []
            upto, self._upto = self._upto, None
            self._first_s = None
            delivered = 0
            try:
                if seqs:
                    delivered += await outbox.mark_delivered(seqs)
                    seqs = []
                if ids:
                    delivered += await outbox.mark_delivered_ids(ids)
                    ids = []
                if upto is not None:
                    delivered += await outbox.mark_delivered_upto(upto)
                    upto = None
            finally:
                # Interrupted (cancelled, outbox error): keep what is unwritten for the next flush;
                # marking twice is harmless.
                self._seqs[:0] = seqs
                self._ids[:0] = ids
                if upto is not None:
                    self._upto = max(upto, self._upto or 0)
                self.delivered += delivered

"""The buffer's public API: raw-event journal, outbox of movements, pipeline checkpoint.

Concurrency. aiosqlite gives the one connection its own thread; every public method runs one
whole function of `Transactions` on that thread (one transaction), so no two operations
interleave, a cancelled caller cannot leave a transaction half done, and the event loop never
waits on SQLite.

Stalls. While another connection holds the file or the disk errs for a moment, every method
waits and runs its transaction again (`stall.py`; `stall.state()` for health); it raises
`BufferUnavailable` only for a fault that will not pass (corrupt, full, closed).

The rest lives beside it: `files` opens, checks and moves aside the file, `schema` runs the
numbered migrations, `rows` holds the SQL and the row encoding (and the byte budget of a row),
`transactions` the bodies that run on the connection thread (and eviction).
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar

from gateway.buffer import files, rows
from gateway.buffer.rows import (
    JOURNAL_ROW_OVERHEAD_B,
    OUTBOX_ROW_OVERHEAD_B,
    BufferStats,
    Gap,
    OutboxRow,
)
from gateway.buffer.stall import StallState, StallWatch
from gateway.buffer.transactions import Transactions
from gateway.domain.events import RawEvent
from gateway.domain.movements import Movement
from gateway.errors import BufferUnavailable, OutboxFull

__all__ = [
    "JOURNAL_ROW_OVERHEAD_B",
    "OUTBOX_ROW_OVERHEAD_B",
    "Buffer",
    "BufferStats",
    "Gap",
    "OutboxRow",
    "StallState",
]

EXPORT_CHUNK_ROWS = 1000
PRUNE_CHUNK_ROWS = 5000
_T = TypeVar("_T")


class Buffer:
    """The SQLite journal and outbox; open with `await Buffer.open(...)`, close with `close()`."""

    def __init__(
        self,
        opened: files.BufferFile,
        *,
        max_bytes: int,
        read_only: bool,
        clock: Callable[[], float],
    ) -> None:
        self._file = opened
        self._read_only = read_only
        self._closed = False
        self._tx = Transactions(opened.raw, opened.path, max_bytes=max_bytes, clock=clock)
        self.corrupt_moved_to = opened.corrupt_moved_to
        # Whether the file is stalled now, since when and why; retries every call while it is.
        self.stall = StallWatch(str(opened.path), clock=clock)

    # -- opening and closing -------------------------------------------------------------------

    @classmethod
    async def open(
        cls,
        path: Path,
        *,
        max_bytes: int,
        synchronous: Literal["FULL", "NORMAL"] = "FULL",
        read_only: bool = False,
        clock: Callable[[], float] = time.time,
    ) -> Buffer:
        """Open (creating and migrating if needed) the buffer; a corrupt file is moved aside."""
        if read_only:
            opened = await files.open_reader(path)
        else:
            opened = await files.open_writer(
                path, max_bytes=max_bytes, synchronous=synchronous, clock=clock
            )
        return cls(opened, max_bytes=max_bytes, read_only=read_only, clock=clock)

    async def verify(self) -> str | None:
        """Check every page on a separate read-only connection; the reason if the file is damaged.

        Run it in the background after open() on a large file. On damage it logs
        `buffer_corrupt_detected` and leaves a marker: the next open() checks the whole file and
        moves it aside. The running daemon should then restart. A stalled file is waited out.
        """
        path = self._file.path
        return await self.stall.run(lambda: files.verify(path))

    async def close(self) -> None:
        """Close the connection (checkpointing the WAL); safe to call twice."""
        if self._closed:
            return
        self._closed = True
        await self._file.db.close()

    @property
    def path(self) -> Path:
        """The buffer file."""
        return self._file.path

    # -- journal -------------------------------------------------------------------------------

    async def append_raw(
        self, events: Sequence[RawEvent], seen: Sequence[tuple[int, bytes]] = ()
    ) -> int:
        """Journal `events` in one transaction; return the last journal id; `OutboxFull` if full.

        `seen`: (packet id, digest) of the MQTT deliveries among them, recorded in the same
        transaction (see `gateway.buffer.inbound`).
        """
        self._writable()
        outcome = await self._call(self._tx.append, list(events), list(seen))
        if isinstance(outcome, OutboxFull):
            raise outcome
        return outcome

    async def read_raw(self, after_id: int, limit: int) -> list[tuple[int, RawEvent]]:
        """Journal rows with id > `after_id`, ascending, at most `limit`."""
        found = await self._call(self._tx.select, rows.SELECT_JOURNAL, (after_id, limit))
        return [(row[0], rows.decode_event(row)) for row in found]

    async def load_checkpoint(self) -> tuple[int, bytes | None]:
        """The pipeline cursor and state blob as last committed; (0, None) on a new file."""
        found = await self._call(self._tx.select, rows.SELECT_CHECKPOINT, ())
        cursor, state = found[0]
        return int(cursor), None if state is None else bytes(state)

    # -- outbox --------------------------------------------------------------------------------

    async def commit_pipeline(
        self,
        movements: Sequence[Movement],
        *,
        cursor: int,
        state: bytes | None,
        render: Callable[[Movement, int], bytes],
        gaps_reported: Sequence[int] = (),
        also: Callable[[sqlite3.Connection], None] | None = None,
    ) -> list[int]:
        """In one transaction: add new movements (dedupe by id), save cursor and state; seqs.

        `also(conn)` writes what belongs with these movements (the expected-returns updates).
        """
        # `render` runs on the connection thread inside the transaction: it must be pure, and if
        # it raises nothing of this commit is kept.
        self._writable()
        return await self._call(
            self._tx.commit, list(movements), cursor, state, render, list(gaps_reported), also
        )

    async def run_transaction(
        self, fn: Callable[[sqlite3.Connection], _T], *, read: bool = False
    ) -> _T:
        """Run `fn(conn)` in one transaction on the connection thread (other buffer modules)."""
        if not read:
            self._writable()
        return await self._call(self._tx.run, fn, read)

    async def pending(self, after_seq: int, limit: int) -> list[OutboxRow]:
        """Undelivered rows with seq > `after_seq`, ascending, at most `limit`."""
        found = await self._call(self._tx.select, rows.SELECT_PENDING, (after_seq, limit))
        return [rows.decode_outbox_row(row) for row in found]

    async def rows_from(
        self, from_seq: int, limit: int, *, include_delivered: bool = True
    ) -> list[OutboxRow]:
        """Rows with seq >= `from_seq`, ascending (delivered ones too unless told otherwise)."""
        sql = rows.SELECT_FROM if include_delivered else rows.SELECT_PENDING_FROM
        found = await self._call(self._tx.select, sql, (from_seq, limit))
        return [rows.decode_outbox_row(row) for row in found]

    async def rows_between(self, start_s: float, end_s: float, limit: int) -> list[OutboxRow]:
        """Rows created in [start_s, end_s], by creation time then seq, at most `limit`."""
        found = await self._call(self._tx.select, rows.SELECT_BETWEEN, (start_s, end_s, limit))
        return [rows.decode_outbox_row(row) for row in found]

    async def mark_delivered(self, seqs: Sequence[int]) -> int:
        """Mark rows delivered by seq; return how many changed from pending to delivered."""
        self._writable()
        if not seqs:
            return 0
        return await self._call(self._tx.mark, rows.MARK_SEQ, [(seq,) for seq in seqs])

    async def mark_delivered_ids(self, ids: Sequence[str]) -> int:
        """Mark rows delivered by movement id; return how many changed."""
        self._writable()
        if not ids:
            return 0
        return await self._call(self._tx.mark, rows.MARK_ID, [(i,) for i in ids])

    async def mark_delivered_upto(self, seq: int) -> int:
        """Mark every pending row with seq <= `seq` delivered; return how many changed."""
        self._writable()
        return await self._call(self._tx.mark, rows.MARK_UPTO, [(seq,)])

    async def unreported_gaps(self) -> list[Gap]:
        """Gaps not yet reported; from now on they no longer grow (new refusals open a new gap)."""
        found = await self._call(self._tx.unreported_gaps)
        return [rows.decode_gap(row) for row in found]

    async def prune_delivered(self, older_than_s: float) -> int:
        """Delete delivered movements created before `older_than_s`; return how many."""
        self._writable()
        total = 0
        while True:
            # Small transactions: a big prune never holds the connection for long.
            deleted = await self._call(self._tx.prune, older_than_s, PRUNE_CHUNK_ROWS)
            total += deleted
            if deleted < PRUNE_CHUNK_ROWS:
                return total

    async def stats(self) -> BufferStats:
        """Counters and the oldest pending row: indexed lookups only."""
        return await self._call(self._tx.stats)

    async def export_raw(self, after_id: int = 0) -> AsyncIterator[tuple[int, RawEvent]]:
        """Every journal row after `after_id`, streamed in chunks."""
        last = after_id
        while True:
            found = await self.read_raw(last, EXPORT_CHUNK_ROWS)
            for row in found:
                yield row
            if len(found) < EXPORT_CHUNK_ROWS:
                return
            last = found[-1][0]

    async def export_movements(self, from_seq: int = 0) -> AsyncIterator[OutboxRow]:
        """Every outbox row from `from_seq`, delivered or not, streamed in chunks."""
        start = from_seq
        while True:
            found = await self.rows_from(start, EXPORT_CHUNK_ROWS)
            for row in found:
                yield row
            if len(found) < EXPORT_CHUNK_ROWS:
                return
            start = found[-1].seq + 1

    # -- key/value -----------------------------------------------------------------------------

    async def kv_get(self, key: str) -> bytes | None:
        """The value stored under `key`, or None."""
        found = await self._call(self._tx.select, rows.SELECT_KV, (key,))
        return bytes(found[0][0]) if found else None

    async def kv_put(self, key: str, value: bytes) -> None:
        """Store `value` under `key` (replacing any previous value), durably."""
        self._writable()
        await self._call(self._tx.kv_put, key, value)

    # -- private -------------------------------------------------------------------------------

    def _writable(self) -> None:
        if self._read_only:
            raise BufferUnavailable(str(self._file.path), "opened read-only")

    async def _call(self, fn: Callable[..., _T], *args: Any) -> _T:
        async def attempt() -> _T:
            if self._closed:
                raise BufferUnavailable(str(self._file.path), "closed")
            return await files.run_on_connection(self._file.db, self._file.path, fn, *args)

        return await self.stall.run(attempt)

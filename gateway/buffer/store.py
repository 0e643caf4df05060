"""The SQLite buffer: raw-event journal, outbox of movements, pipeline checkpoint, byte budget.

Byte budget. "Used bytes" is the sum, over every journal and outbox row, of the row's `size_b`:

- journal row: `JOURNAL_ROW_OVERHEAD_B` + characters of reader, station, data (EPC hex or scan
  text) and device;
- outbox row: `OUTBOX_ROW_OVERHEAD_B` + bytes of the rendered payload + characters of the id.

The overheads approximate SQLite's record, b-tree and index cost, so that used bytes track the
live data in the file (free pages left by deletions are reused, not counted). `size_b` is stored
with each row and the total is kept in the `counters` row in the same transaction that inserts or
deletes rows, so it is exact with respect to this definition and reloads in O(1) at open. Gaps,
the pipeline state blob and key/value entries are small and not counted.

When an append would go over the budget: journal rows the pipeline has consumed (id <= cursor)
are deleted oldest first, then delivered movements oldest first, each time to a little below
the budget so that eviction does not run on every batch. Undelivered movements are never
deleted. If there is still no room the batch is refused: a gap is recorded and `OutboxFull`
raised.

Concurrency. aiosqlite gives the one connection its own thread; every public method runs one
whole function on that thread (one transaction), so no two operations interleave, a cancelled
caller cannot leave a transaction half done, and the event loop never waits on SQLite.
"""

from __future__ import annotations

import asyncio
import json
import re
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any, Literal, TypeVar, cast

import aiosqlite

from gateway.domain.events import BarcodeScan, RawEvent, TagRead
from gateway.domain.movements import Movement
from gateway.errors import BufferUnavailable, GatewayError, OutboxFull
from gateway.logs import get_logger

_log = get_logger("buffer")

JOURNAL_ROW_OVERHEAD_B = 40
OUTBOX_ROW_OVERHEAD_B = 110
# After eviction, aim this far below the budget so that the next batches need none.
EVICTION_HEADROOM_SHARE = 1 / 32
EXPORT_CHUNK_ROWS = 1000
PRUNE_CHUNK_ROWS = 5000
GAP_REASON_FULL = "buffer_full"
BUSY_TIMEOUT_MS = 5000
CACHE_KIB = 4096
WAL_SIZE_LIMIT_B = 64 * 1024 * 1024
# `quick_check` verifies every page and record but not that indexes match their tables;
# `integrity_check` also does that and takes about three times longer (1.1 s against 3.2 s on a
# 1,000,000-movement file with a warm page cache; see bench/bench_memory.py).
CHECK_PRAGMA = "quick_check"
# Any full check reads the whole file: 17 s for that file from a cold cache on this machine.
# Above this size open() checks the schema and small tables only and `verify()` does the rest in
# the background; a failed `verify()` leaves a marker that makes the next open() check fully.
FULL_CHECK_MAX_BYTES = 64 * 1024 * 1024
VERIFY_FAILED_SUFFIX = ".verify-failed"
_SMALL_TABLES = ("counters", "checkpoint", "gaps", "kv")

_SQLITE_CORRUPT = 11
_SQLITE_NOTADB = 26
_MIGRATION_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")
_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class OutboxRow:
    """One movement in the outbox, as rendered at commit time."""

    seq: int
    id: str
    payload: bytes
    created_at_s: float
    delivered: bool


@dataclass(frozen=True, slots=True)
class Gap:
    """Input the buffer refused because it was full."""

    gap_id: int
    refused_events: int
    first_at_s: float
    last_at_s: float
    reason: str


@dataclass(frozen=True, slots=True)
class BufferStats:
    """A cheap snapshot of the buffer (counters, not scans)."""

    path: str
    file_bytes: int
    budget_bytes: int
    used_bytes: int
    journal_rows: int
    journal_last_id: int
    cursor: int
    outbox_rows: int
    pending: int
    oldest_pending_seq: int | None
    oldest_pending_age_s: float | None
    last_seq: int
    delivered_total: int
    gaps_total: int
    refused_events_total: int


@dataclass(slots=True)
class _Counters:
    used_bytes: int
    journal_rows: int
    journal_last_id: int
    outbox_rows: int
    pending: int
    last_seq: int
    delivered_total: int
    gaps_total: int
    refused_events_total: int


@dataclass(frozen=True, slots=True)
class _Migration:
    version: int
    name: str
    sql: str


class _CorruptError(Exception):
    """Raised on the connection thread when the file is damaged or not SQLite at all."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Buffer:
    """The SQLite journal and outbox; open with `await Buffer.open(...)`, close with `close()`."""

    def __init__(
        self,
        db: aiosqlite.Connection,
        raw: sqlite3.Connection,
        path: Path,
        *,
        max_bytes: int,
        read_only: bool,
        clock: Callable[[], float],
        corrupt_moved_to: Path | None,
    ) -> None:
        self._db = db
        self._raw = raw
        self._path = path
        self._max_bytes = max_bytes
        self._read_only = read_only
        self._clock = clock
        self._closed = False
        # Gaps handed to the pipeline: later refusals start a new gap instead of growing these.
        self._sealed_gaps: set[int] = set()
        self.corrupt_moved_to = corrupt_moved_to

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
            return await cls._open_read_only(path, max_bytes=max_bytes, clock=clock)
        moved_to: Path | None = None
        marker = _verify_marker(path)
        full = marker.exists() or _size(path) <= FULL_CHECK_MAX_BYTES
        reason = await _check_existing(path, full=full)
        if reason is not None:
            moved_to = _set_aside(path, clock(), reason)
        marker.unlink(missing_ok=True)
        db, raw = await _connect(path, read_only=False)
        try:
            await _run(db, path, _prepare_writer, raw, str(path), synchronous, max_bytes)
        except _CorruptError as exc:
            # Damage the read-only check did not reach (the schema pages, a migration's pages).
            await db.close()
            if moved_to is not None:
                raise BufferUnavailable(str(path), f"fresh buffer unusable: {exc.reason}") from exc
            moved_to = _set_aside(path, clock(), exc.reason)
            db, raw = await _connect(path, read_only=False)
            try:
                await _run(db, path, _prepare_writer, raw, str(path), synchronous, max_bytes)
            except BaseException:
                await db.close()
                raise
        except BaseException:
            await db.close()
            raise
        return cls(
            db,
            raw,
            path,
            max_bytes=max_bytes,
            read_only=False,
            clock=clock,
            corrupt_moved_to=moved_to,
        )

    @classmethod
    async def _open_read_only(
        cls, path: Path, *, max_bytes: int, clock: Callable[[], float]
    ) -> Buffer:
        if not path.is_file():  # noqa: ASYNC240 - one stat at start-up, for a clear error
            raise BufferUnavailable(str(path), "no buffer file")
        db, raw = await _connect(path, read_only=True)
        try:
            await _run(db, path, _prepare_reader, raw, str(path))
        except _CorruptError as exc:
            await db.close()
            raise BufferUnavailable(str(path), f"corrupt: {exc.reason}") from exc
        except BaseException:
            await db.close()
            raise
        return cls(
            db,
            raw,
            path,
            max_bytes=max_bytes,
            read_only=True,
            clock=clock,
            corrupt_moved_to=None,
        )

    async def verify(self) -> str | None:
        """Check every page on a separate read-only connection; the reason if the file is damaged.

        Run it in the background after open() on a large file. On damage it logs
        `buffer_corrupt_detected` and leaves a marker: the next open() checks the whole file and
        moves it aside. The running daemon should then restart.
        """
        reason = await _check_existing(self._path, full=True)
        if reason is not None:
            marker = _verify_marker(self._path)
            await asyncio.to_thread(marker.write_text, reason + "\n")
            _log.error(
                "buffer_corrupt_detected",
                path=str(self._path),
                reason=reason,
                marker=str(marker),
                advice="restart: the damaged file will be moved aside and a fresh one started",
            )
        return reason

    async def close(self) -> None:
        """Close the connection (checkpointing the WAL); safe to call twice."""
        if self._closed:
            return
        self._closed = True
        await self._db.close()

    @property
    def path(self) -> Path:
        """The buffer file."""
        return self._path

    # -- journal -------------------------------------------------------------------------------

    async def append_raw(self, events: Sequence[RawEvent]) -> int:
        """Journal `events` in one transaction; return the last journal id; `OutboxFull` if full."""
        self._writable()
        outcome = await self._call(self._append_sync, list(events))
        if isinstance(outcome, OutboxFull):
            raise outcome
        return outcome

    async def read_raw(self, after_id: int, limit: int) -> list[tuple[int, RawEvent]]:
        """Journal rows with id > `after_id`, ascending, at most `limit`."""
        rows = await self._call(self._select_sync, _SELECT_JOURNAL, (after_id, limit))
        return [(row[0], _decode_event(row)) for row in rows]

    async def load_checkpoint(self) -> tuple[int, bytes | None]:
        """The pipeline cursor and state blob as last committed; (0, None) on a new file."""
        rows = await self._call(
            self._select_sync, "SELECT cursor, state FROM checkpoint WHERE one = 1", ()
        )
        cursor, state = rows[0]
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
            self._commit_sync, list(movements), cursor, state, render, list(gaps_reported), also
        )

    async def run_write(self, fn: Callable[[sqlite3.Connection], _T]) -> _T:
        """Run `fn(conn)` in one write transaction on the connection thread (buffer modules)."""
        self._writable()
        return await self._call(self._in_transaction_sync, fn, False)

    async def run_read(self, fn: Callable[[sqlite3.Connection], _T]) -> _T:
        """Run `fn(conn)` in one read transaction on the connection thread (buffer modules)."""
        return await self._call(self._in_transaction_sync, fn, True)

    async def pending(self, after_seq: int, limit: int) -> list[OutboxRow]:
        """Undelivered rows with seq > `after_seq`, ascending, at most `limit`."""
        rows = await self._call(self._select_sync, _SELECT_PENDING, (after_seq, limit))
        return [_outbox_row(row) for row in rows]

    async def rows_from(
        self, from_seq: int, limit: int, *, include_delivered: bool = True
    ) -> list[OutboxRow]:
        """Rows with seq >= `from_seq`, ascending (delivered ones too unless told otherwise)."""
        sql = _SELECT_FROM if include_delivered else _SELECT_PENDING_FROM
        rows = await self._call(self._select_sync, sql, (from_seq, limit))
        return [_outbox_row(row) for row in rows]

    async def rows_between(self, start_s: float, end_s: float, limit: int) -> list[OutboxRow]:
        """Rows created in [start_s, end_s], by creation time then seq, at most `limit`."""
        rows = await self._call(self._select_sync, _SELECT_BETWEEN, (start_s, end_s, limit))
        return [_outbox_row(row) for row in rows]

    async def mark_delivered(self, seqs: Sequence[int]) -> int:
        """Mark rows delivered by seq; return how many changed from pending to delivered."""
        self._writable()
        if not seqs:
            return 0
        return await self._call(self._mark_sync, _MARK_SEQ, [(seq,) for seq in seqs])

    async def mark_delivered_ids(self, ids: Sequence[str]) -> int:
        """Mark rows delivered by movement id; return how many changed."""
        self._writable()
        if not ids:
            return 0
        return await self._call(self._mark_sync, _MARK_ID, [(i,) for i in ids])

    async def mark_delivered_upto(self, seq: int) -> int:
        """Mark every pending row with seq <= `seq` delivered; return how many changed."""
        self._writable()
        return await self._call(self._mark_sync, _MARK_UPTO, [(seq,)])

    async def unreported_gaps(self) -> list[Gap]:
        """Gaps not yet reported; from now on they no longer grow (new refusals open a new gap)."""
        rows = await self._call(self._unreported_sync)
        return [Gap(int(r[0]), int(r[1]), float(r[2]), float(r[3]), str(r[4])) for r in rows]

    async def prune_delivered(self, older_than_s: float) -> int:
        """Delete delivered movements created before `older_than_s`; return how many."""
        self._writable()
        total = 0
        while True:
            # Small transactions: a big prune never holds the connection for long.
            deleted = await self._call(self._prune_sync, older_than_s, PRUNE_CHUNK_ROWS)
            total += deleted
            if deleted < PRUNE_CHUNK_ROWS:
                return total

    async def stats(self) -> BufferStats:
        """Counters and the oldest pending row: indexed lookups only."""
        return await self._call(self._stats_sync)

    async def export_raw(self, after_id: int = 0) -> AsyncIterator[tuple[int, RawEvent]]:
        """Every journal row after `after_id`, streamed in chunks."""
        last = after_id
        while True:
            rows = await self.read_raw(last, EXPORT_CHUNK_ROWS)
            for row in rows:
                yield row
            if len(rows) < EXPORT_CHUNK_ROWS:
                return
            last = rows[-1][0]

    async def export_movements(self, from_seq: int = 0) -> AsyncIterator[OutboxRow]:
        """Every outbox row from `from_seq`, delivered or not, streamed in chunks."""
        start = from_seq
        while True:
            rows = await self.rows_from(start, EXPORT_CHUNK_ROWS)
            for row in rows:
                yield row
            if len(rows) < EXPORT_CHUNK_ROWS:
                return
            start = rows[-1].seq + 1

    # -- key/value -----------------------------------------------------------------------------

    async def kv_get(self, key: str) -> bytes | None:
        """The value stored under `key`, or None."""
        rows = await self._call(self._select_sync, "SELECT value FROM kv WHERE key = ?", (key,))
        return bytes(rows[0][0]) if rows else None

    async def kv_put(self, key: str, value: bytes) -> None:
        """Store `value` under `key` (replacing any previous value), durably."""
        self._writable()
        await self._call(self._kv_put_sync, key, value)

    # -- private: running on the connection thread ---------------------------------------------

    def _writable(self) -> None:
        if self._read_only:
            raise BufferUnavailable(str(self._path), "opened read-only")

    async def _call(self, fn: Callable[..., _T], *args: Any) -> _T:
        if self._closed:
            raise BufferUnavailable(str(self._path), "closed")
        return await _run(self._db, self._path, fn, *args)

    def _select_sync(self, sql: str, params: tuple[Any, ...]) -> list[Any]:
        return self._raw.execute(sql, params).fetchall()

    def _in_transaction_sync(self, fn: Callable[[sqlite3.Connection], _T], read: bool) -> _T:
        with _transaction(self._raw, read=read):
            return fn(self._raw)

    def _append_sync(self, events: list[RawEvent]) -> int | OutboxFull:
        conn = self._raw
        with _transaction(conn):
            counters = _load_counters(conn)
            if not events:
                return counters.journal_last_id
            first_id = counters.journal_last_id + 1
            rows = [_encode_event(first_id + i, event) for i, event in enumerate(events)]
            needed = sum(row[-1] for row in rows)
            if counters.used_bytes + needed > self._max_bytes:
                self._make_room(conn, counters, _load_cursor(conn), needed)
            if counters.used_bytes + needed > self._max_bytes:
                self._record_gap(conn, counters, events)
                _save_counters(conn, counters)
                return OutboxFull(needed, self._max_bytes)
            conn.executemany(_INSERT_JOURNAL, rows)
            counters.journal_rows += len(rows)
            counters.journal_last_id += len(rows)
            counters.used_bytes += needed
            _save_counters(conn, counters)
            return counters.journal_last_id

    def _commit_sync(
        self,
        movements: list[Movement],
        cursor: int,
        state: bytes | None,
        render: Callable[[Movement, int], bytes],
        gaps_reported: list[int],
        also: Callable[[sqlite3.Connection], None] | None = None,
    ) -> list[int]:
        conn = self._raw
        with _transaction(conn):
            counters = _load_counters(conn)
            seen: set[str] = set()
            if movements:
                ids = json.dumps([m.id for m in movements])
                seen.update(r[0] for r in conn.execute(_SELECT_EXISTING_IDS, (ids,)))
            now_s = self._clock()
            rows: list[tuple[int, str, bytes, float, int]] = []
            added = 0
            for movement in movements:
                if movement.id in seen:
                    continue
                seen.add(movement.id)
                seq = counters.last_seq + 1
                counters.last_seq = seq
                payload = render(movement, seq)
                size_b = OUTBOX_ROW_OVERHEAD_B + len(payload) + len(movement.id)
                rows.append((seq, movement.id, payload, now_s, size_b))
                added += size_b
            if rows:
                conn.executemany(_INSERT_OUTBOX, rows)
                counters.outbox_rows += len(rows)
                counters.pending += len(rows)
                counters.used_bytes += added
            conn.execute(
                "UPDATE checkpoint SET cursor = ?, state = ? WHERE one = 1", (cursor, state)
            )
            if gaps_reported:
                conn.executemany(
                    "UPDATE gaps SET reported = 1 WHERE gap_id = ?", [(g,) for g in gaps_reported]
                )
            if also is not None:
                also(conn)
            if counters.used_bytes > self._max_bytes:
                # Movements are never refused; the journal rows they came from make way for them.
                self._make_room(conn, counters, cursor, 0)
            _save_counters(conn, counters)
            return [row[0] for row in rows]

    def _make_room(
        self, conn: sqlite3.Connection, counters: _Counters, cursor: int, needed: int
    ) -> None:
        hard = self._max_bytes - needed
        soft = hard - int(self._max_bytes * EVICTION_HEADROOM_SHARE)
        if counters.used_bytes > hard:
            freed, rows = _evict(conn, _SELECT_CONSUMED, _DELETE_JOURNAL, (cursor,), counters, soft)
            counters.journal_rows -= rows
            if rows:
                _log.info("journal_rows_evicted", rows=rows, freed_bytes=freed)
        if counters.used_bytes > hard:
            freed, rows = _evict(conn, _SELECT_DELIVERED, _DELETE_OUTBOX, (), counters, soft)
            counters.outbox_rows -= rows
            if rows:
                _log.warning("delivered_movements_evicted", rows=rows, freed_bytes=freed)

    def _record_gap(
        self, conn: sqlite3.Connection, counters: _Counters, events: list[RawEvent]
    ) -> None:
        first_s = min(e.at_s for e in events)
        last_s = max(e.at_s for e in events)
        latest = conn.execute(
            "SELECT gap_id, first_at_s, last_at_s FROM gaps WHERE reported = 0 AND reason = ?"
            " ORDER BY gap_id DESC LIMIT 1",
            (GAP_REASON_FULL,),
        ).fetchone()
        if latest is not None and latest[0] not in self._sealed_gaps:
            conn.execute(
                "UPDATE gaps SET refused_events = refused_events + ?, first_at_s = ?,"
                " last_at_s = ? WHERE gap_id = ?",
                (len(events), min(first_s, latest[1]), max(last_s, latest[2]), latest[0]),
            )
        else:
            conn.execute(
                "INSERT INTO gaps (refused_events, first_at_s, last_at_s, reason, recorded_at_s)"
                " VALUES (?, ?, ?, ?, ?)",
                (len(events), first_s, last_s, GAP_REASON_FULL, self._clock()),
            )
            counters.gaps_total += 1
        counters.refused_events_total += len(events)

    def _mark_sync(self, sql: str, params: list[tuple[Any]]) -> int:
        conn = self._raw
        with _transaction(conn):
            changed = conn.executemany(sql, params).rowcount
            if changed > 0:
                counters = _load_counters(conn)
                counters.pending -= changed
                counters.delivered_total += changed
                _save_counters(conn, counters)
            return max(changed, 0)

    def _unreported_sync(self) -> list[tuple[Any, ...]]:
        rows = self._raw.execute(
            "SELECT gap_id, refused_events, first_at_s, last_at_s, reason FROM gaps"
            " WHERE reported = 0 ORDER BY gap_id"
        ).fetchall()
        self._sealed_gaps.update(int(r[0]) for r in rows)
        return rows

    def _prune_sync(self, older_than_s: float, limit: int) -> int:
        conn = self._raw
        with _transaction(conn):
            rows = conn.execute(_SELECT_PRUNABLE, (older_than_s, limit)).fetchall()
            if not rows:
                return 0
            conn.executemany(_DELETE_OUTBOX, [(r[0],) for r in rows])
            counters = _load_counters(conn)
            counters.outbox_rows -= len(rows)
            counters.used_bytes -= sum(int(r[1]) for r in rows)
            _save_counters(conn, counters)
            return len(rows)

    def _kv_put_sync(self, key: str, value: bytes) -> None:
        with _transaction(self._raw):
            self._raw.execute(
                "INSERT INTO kv (key, value) VALUES (?, ?)"
                " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (key, value),
            )

    def _stats_sync(self) -> BufferStats:
        conn = self._raw
        with _transaction(conn, read=True):
            counters = _load_counters(conn)
            cursor = _load_cursor(conn)
            oldest = conn.execute(_SELECT_OLDEST_PENDING).fetchone()
        file_bytes = sum(_size(Path(f"{self._path}{suffix}")) for suffix in ("", "-wal"))
        return BufferStats(
            path=str(self._path),
            file_bytes=file_bytes,
            budget_bytes=self._max_bytes,
            used_bytes=counters.used_bytes,
            journal_rows=counters.journal_rows,
            journal_last_id=counters.journal_last_id,
            cursor=cursor,
            outbox_rows=counters.outbox_rows,
            pending=counters.pending,
            oldest_pending_seq=None if oldest is None else int(oldest[0]),
            oldest_pending_age_s=None if oldest is None else max(0.0, self._clock() - oldest[1]),
            last_seq=counters.last_seq,
            delivered_total=counters.delivered_total,
            gaps_total=counters.gaps_total,
            refused_events_total=counters.refused_events_total,
        )


# -- SQL -----------------------------------------------------------------------------------------

_JOURNAL_COLUMNS = "id, kind, reader, station, at_s, data, antenna, rssi, count, channel, device"
_INSERT_JOURNAL = (
    "INSERT INTO journal (id, kind, reader, station, at_s, data, antenna, rssi, count, channel,"
    " device, size_b) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_SELECT_JOURNAL = f"SELECT {_JOURNAL_COLUMNS} FROM journal WHERE id > ? ORDER BY id LIMIT ?"  # noqa: S608 - constant column list, values bound
_SELECT_CONSUMED = "SELECT id, size_b FROM journal WHERE id <= ? ORDER BY id LIMIT ?"
_DELETE_JOURNAL = "DELETE FROM journal WHERE id = ?"
_OUTBOX_COLUMNS = "seq, id, payload, created_at_s, delivered"
_INSERT_OUTBOX = (
    "INSERT INTO outbox (seq, id, payload, created_at_s, delivered, size_b)"
    " VALUES (?, ?, ?, ?, 0, ?)"
)
_SELECT_EXISTING_IDS = "SELECT id FROM outbox WHERE id IN (SELECT value FROM json_each(?))"
_SELECT_PENDING = (
    f"SELECT {_OUTBOX_COLUMNS} FROM outbox INDEXED BY outbox_pending"  # noqa: S608 - constant column list, values bound
    " WHERE delivered = 0 AND seq > ? ORDER BY seq LIMIT ?"
)
_SELECT_PENDING_FROM = (
    f"SELECT {_OUTBOX_COLUMNS} FROM outbox INDEXED BY outbox_pending"  # noqa: S608 - constant column list, values bound
    " WHERE delivered = 0 AND seq >= ? ORDER BY seq LIMIT ?"
)
_SELECT_FROM = f"SELECT {_OUTBOX_COLUMNS} FROM outbox WHERE seq >= ? ORDER BY seq LIMIT ?"  # noqa: S608 - constant column list, values bound
_SELECT_BETWEEN = (
    f"SELECT {_OUTBOX_COLUMNS} FROM outbox INDEXED BY outbox_created"  # noqa: S608 - constant column list, values bound
    " WHERE created_at_s >= ? AND created_at_s <= ? ORDER BY created_at_s, seq LIMIT ?"
)
_SELECT_OLDEST_PENDING = (
    "SELECT seq, created_at_s FROM outbox INDEXED BY outbox_pending"
    " WHERE delivered = 0 ORDER BY seq LIMIT 1"
)
_SELECT_DELIVERED = (
    "SELECT seq, size_b FROM outbox INDEXED BY outbox_delivered"
    " WHERE delivered = 1 ORDER BY created_at_s, seq LIMIT ?"
)
_SELECT_PRUNABLE = (
    "SELECT seq, size_b FROM outbox INDEXED BY outbox_delivered"
    " WHERE delivered = 1 AND created_at_s < ? ORDER BY created_at_s, seq LIMIT ?"
)
_DELETE_OUTBOX = "DELETE FROM outbox WHERE seq = ?"
_MARK_SEQ = "UPDATE outbox SET delivered = 1 WHERE seq = ? AND delivered = 0"
_MARK_ID = "UPDATE outbox SET delivered = 1 WHERE id = ? AND delivered = 0"
_MARK_UPTO = (
    "UPDATE outbox INDEXED BY outbox_pending SET delivered = 1 WHERE delivered = 0 AND seq <= ?"
)
_COUNTER_FIELDS = (
    "used_bytes",
    "journal_rows",
    "journal_last_id",
    "outbox_rows",
    "pending",
    "last_seq",
    "delivered_total",
    "gaps_total",
    "refused_events_total",
)
_SELECT_COUNTERS = f"SELECT {', '.join(_COUNTER_FIELDS)} FROM counters WHERE one = 1"  # noqa: S608 - constant column list
_UPDATE_COUNTERS = (
    f"UPDATE counters SET {', '.join(f'{name} = ?' for name in _COUNTER_FIELDS)} WHERE one = 1"  # noqa: S608 - constant column list, values bound
)
_EVICT_BATCH_ROWS = 1000


# -- private helpers -----------------------------------------------------------------------------


async def _connect(
    path: Path, *, read_only: bool
) -> tuple[aiosqlite.Connection, sqlite3.Connection]:
    """An aiosqlite connection and the sqlite3 connection it wraps (used only on its thread)."""
    made: list[sqlite3.Connection] = []

    def connector() -> sqlite3.Connection:
        if read_only:
            conn = sqlite3.connect(
                f"{path.resolve().as_uri()}?mode=ro", uri=True, isolation_level=None
            )
        else:
            conn = sqlite3.connect(path, isolation_level=None)
        made.append(conn)
        return conn

    db = aiosqlite.Connection(connector, iter_chunk_size=EXPORT_CHUNK_ROWS)
    try:
        await db
    except sqlite3.Error as exc:
        raise BufferUnavailable(str(path), f"cannot open: {exc}") from exc
    return db, made[0]


async def _run(db: aiosqlite.Connection, path: Path, fn: Callable[..., _T], *args: Any) -> _T:
    """Run `fn(*args)` on the connection's thread; wrap SQLite errors once."""
    try:
        # aiosqlite's own queue runs the whole function on its connection thread; its public
        # methods take one statement at a time, which would let transactions interleave.
        result = await db._execute(fn, *args)  # type: ignore[no-untyped-call]  # noqa: SLF001 - see comment above
    except sqlite3.Error as exc:
        raise BufferUnavailable(str(path), str(exc)) from exc
    except ValueError as exc:
        if str(exc) == "Connection closed":
            raise BufferUnavailable(str(path), "closed") from exc
        raise
    return cast("_T", result)


@contextmanager
def _transaction(conn: sqlite3.Connection, *, read: bool = False) -> Iterator[None]:
    conn.execute("BEGIN" if read else "BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def _prepare_writer(conn: sqlite3.Connection, where: str, synchronous: str, max_bytes: int) -> None:
    """Pragmas and migrations on a writer connection; `_CorruptError` if damaged.

    The WAL is checkpointed and truncated at a quarter of the byte budget (at most 64 MiB), so
    a small budget is not dwarfed by SQLite's default 4 MB WAL.
    """
    wal_limit_b = min(WAL_SIZE_LIMIT_B, max(64 * 1024, max_bytes // 4))
    try:
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise BufferUnavailable(where, f"cannot switch to WAL (journal_mode={mode})")
        conn.execute(f"PRAGMA synchronous = {'FULL' if synchronous == 'FULL' else 'NORMAL'}")
        conn.execute(f"PRAGMA cache_size = -{CACHE_KIB}")
        conn.execute(f"PRAGMA journal_size_limit = {wal_limit_b}")
        conn.execute(f"PRAGMA wal_autocheckpoint = {max(16, wal_limit_b // 4096)}")
        _migrate(conn, where)
        conn.execute(_SELECT_COUNTERS).fetchone()
    except sqlite3.DatabaseError as exc:
        if _is_corruption(exc):
            raise _CorruptError(str(exc)) from exc
        raise


async def _check_existing(path: Path, *, full: bool) -> str | None:
    """Check an existing file (all of it, or schema and small tables); why it is corrupt, or None.

    The check uses its own read-only connection: a writer closing on a damaged file deletes its
    -wal, which must go aside with the file, untouched; and a check beside a running writer must
    not hold up the writer's thread.
    """
    if _size(path) == 0:
        return None
    db, raw = await _connect(path, read_only=True)
    try:
        return await _run(db, path, _integrity_check, raw, full)
    except asyncio.CancelledError:
        # A full check can take seconds; stop it now so that close() does not wait for it.
        raw.interrupt()
        raise
    finally:
        await db.close()


def _integrity_check(conn: sqlite3.Connection, full: bool) -> str | None:
    try:
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
        if full:
            pragmas = [f"PRAGMA {CHECK_PRAGMA}"]
        else:
            present = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
            pragmas = [f"PRAGMA {CHECK_PRAGMA}({t})" for t in _SMALL_TABLES if t in present]
        for pragma in pragmas:
            result = [str(r[0]) for r in conn.execute(pragma).fetchmany(5)]
            if result != ["ok"]:
                return "; ".join(result)
    except sqlite3.DatabaseError as exc:
        if _is_corruption(exc):
            return str(exc)
        raise
    return None


def _verify_marker(path: Path) -> Path:
    return path.with_name(f"{path.name}{VERIFY_FAILED_SUFFIX}")


def _set_aside(path: Path, now_s: float, reason: str) -> Path:
    moved_to = _move_aside(path, now_s)
    _log.error(
        "buffer_corrupt_moved_aside",
        path=str(path),
        moved_to=str(moved_to),
        reason=reason,
        advice="started with an empty buffer; keep the damaged file for analysis",
    )
    return moved_to


def _prepare_reader(conn: sqlite3.Connection, where: str) -> None:
    """Check that a read-only connection sees a buffer this code understands."""
    try:
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        conn.execute("PRAGMA query_only = ON")
        version = int(conn.execute("PRAGMA user_version").fetchone()[0])
        latest = _migrations()[-1].version
        if version != latest:
            raise BufferUnavailable(
                where, f"schema version {version}, this gateway reads version {latest}"
            )
        conn.execute(_SELECT_COUNTERS).fetchone()
    except sqlite3.DatabaseError as exc:
        if _is_corruption(exc):
            raise _CorruptError(str(exc)) from exc
        raise


def _migrate(conn: sqlite3.Connection, where: str) -> None:
    """Apply every pending numbered migration in one transaction and set `user_version`."""
    version = int(conn.execute("PRAGMA user_version").fetchone()[0])
    migrations = _migrations()
    latest = migrations[-1].version
    if version > latest:
        raise BufferUnavailable(
            where, f"schema version {version} is newer than this gateway's {latest}"
        )
    pending = [m for m in migrations if m.version > version]
    if not pending:
        return
    # executescript() runs statements as given: one explicit transaction around all of them.
    script = "\n".join(
        [
            "BEGIN IMMEDIATE;",
            *(m.sql for m in pending),
            f"PRAGMA user_version = {latest};",
            "COMMIT;",
        ]
    )
    try:
        conn.executescript(script)
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    _log.info("buffer_migrated", from_version=version, to_version=latest)


def _migrations() -> list[_Migration]:
    """The numbered `.sql` files shipped in `gateway/buffer/migrations`, in order, no holes."""
    found: list[_Migration] = []
    for entry in resources.files("gateway.buffer").joinpath("migrations").iterdir():
        match = _MIGRATION_NAME.match(entry.name)
        if match:
            found.append(_Migration(int(match.group(1)), entry.name, entry.read_text("utf-8")))
    found.sort(key=lambda m: m.version)
    if [m.version for m in found] != list(range(1, len(found) + 1)):
        raise GatewayError(f"buffer migrations are not numbered 1..n: {[m.name for m in found]}")
    return found


def _is_corruption(exc: sqlite3.DatabaseError) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return (code & 0xFF) in {_SQLITE_CORRUPT, _SQLITE_NOTADB}
    text = str(exc)
    return "malformed" in text or "not a database" in text


def _move_aside(path: Path, now_s: float) -> Path:
    """Rename the file and its -wal/-shm to `<name>.corrupt-<UTC timestamp>`; never delete."""
    stamp = datetime.fromtimestamp(now_s, UTC).strftime("%Y%m%dT%H%M%SZ")
    target = path.with_name(f"{path.name}.corrupt-{stamp}")
    attempt = 1
    while any(Path(f"{target}{s}").exists() for s in ("", "-wal", "-shm")):
        target = path.with_name(f"{path.name}.corrupt-{stamp}-{attempt}")
        attempt += 1
    for suffix in ("", "-wal", "-shm"):
        source = Path(f"{path}{suffix}")
        if source.exists():
            source.rename(f"{target}{suffix}")
    return target


def _evict(
    conn: sqlite3.Connection,
    select_sql: str,
    delete_sql: str,
    params: tuple[Any, ...],
    counters: _Counters,
    goal_bytes: int,
) -> tuple[int, int]:
    """Delete rows in `select_sql` order until used bytes reach `goal_bytes`; (bytes, rows)."""
    freed = 0
    deleted = 0
    while counters.used_bytes > goal_bytes:
        rows = conn.execute(select_sql, (*params, _EVICT_BATCH_ROWS)).fetchall()
        if not rows:
            break
        keys: list[tuple[int]] = []
        for key, size_b in rows:
            keys.append((key,))
            counters.used_bytes -= size_b
            freed += size_b
            if counters.used_bytes <= goal_bytes:
                break
        conn.executemany(delete_sql, keys)
        deleted += len(keys)
    return freed, deleted


def _load_counters(conn: sqlite3.Connection) -> _Counters:
    return _Counters(*conn.execute(_SELECT_COUNTERS).fetchone())


def _save_counters(conn: sqlite3.Connection, counters: _Counters) -> None:
    conn.execute(_UPDATE_COUNTERS, [getattr(counters, name) for name in _COUNTER_FIELDS])


def _load_cursor(conn: sqlite3.Connection) -> int:
    return int(conn.execute("SELECT cursor FROM checkpoint WHERE one = 1").fetchone()[0])


def _encode_event(journal_id: int, event: RawEvent) -> tuple[Any, ...]:
    if isinstance(event, TagRead):
        size_b = (
            JOURNAL_ROW_OVERHEAD_B + len(event.reader) + len(event.station) + len(event.epc_hex)
        )
        return (
            journal_id,
            0,
            event.reader,
            event.station,
            event.at_s,
            event.epc_hex,
            event.antenna,
            event.rssi_dbm,
            event.read_count,
            event.channel,
            None,
            size_b,
        )
    device = event.device
    size_b = (
        JOURNAL_ROW_OVERHEAD_B
        + len(event.reader)
        + len(event.station)
        + len(event.data)
        + (len(device) if device is not None else 0)
    )
    return (
        journal_id,
        1,
        event.reader,
        event.station,
        event.at_s,
        event.data,
        None,
        None,
        None,
        None,
        device,
        size_b,
    )


def _decode_event(row: tuple[Any, ...]) -> RawEvent:
    _, kind, reader, station, at_s, data, antenna, rssi, count, channel, device = row
    if kind == 0:
        return TagRead(
            reader=reader,
            station=station,
            epc_hex=data,
            antenna=antenna,
            at_s=at_s,
            rssi_dbm=rssi,
            read_count=count,
            channel=channel,
        )
    return BarcodeScan(reader=reader, station=station, data=data, at_s=at_s, device=device)


def _outbox_row(row: tuple[Any, ...]) -> OutboxRow:
    return OutboxRow(
        seq=row[0], id=row[1], payload=bytes(row[2]), created_at_s=row[3], delivered=bool(row[4])
    )


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0

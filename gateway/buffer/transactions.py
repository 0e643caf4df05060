"""The buffer's transactions: each method runs on the connection thread as one SQLite transaction.

Used bytes, the sum of every journal and outbox row's `size_b` (see `rows`), are kept in the
`counters` row in the same transaction that inserts or deletes rows, so they are exact and
reload in O(1) at open. Gaps, the pipeline state blob and key/value entries are small and not
counted.

When an append would go over the budget: journal rows the pipeline has consumed (id <= cursor)
are deleted oldest first, then delivered movements oldest first, each time to a little below
the budget so that eviction does not run on every batch. Undelivered movements are never
deleted. If there is still no room the batch is refused: a gap is recorded and `OutboxFull`
returned for the caller to raise.

Every method may run again after a failure (`stall.py` retries a stalled file): a failure rolls
the whole transaction back, and nothing in Python changes before the commit (counters are read
from the file inside the transaction; evictions are logged once committed).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, TypeVar

from gateway.buffer import rows
from gateway.buffer.files import disk_bytes
from gateway.buffer.rows import BufferStats, Counters, load_counters, save_counters
from gateway.domain.events import RawEvent
from gateway.domain.movements import Movement
from gateway.errors import OutboxFull
from gateway.logs import get_logger

_log = get_logger("buffer")

# After eviction, aim this far below the budget so that the next batches need none.
EVICTION_HEADROOM_SHARE = 1 / 32
_EVICT_BATCH_ROWS = 1000
_T = TypeVar("_T")


class Transactions:
    """The buffer's reads and writes, one transaction each; call only on the connection thread."""

    def __init__(
        self,
        conn: sqlite3.Connection,
        path: Path,
        *,
        max_bytes: int,
        clock: Callable[[], float],
    ) -> None:
        self._conn = conn
        self._path = path
        self._max_bytes = max_bytes
        self._clock = clock
        # Gaps handed to the pipeline: later refusals start a new gap instead of growing these.
        self._sealed_gaps: set[int] = set()

    def run(self, fn: Callable[[sqlite3.Connection], _T], read: bool) -> _T:
        """`fn(conn)` in one transaction (for other buffer modules: the expected returns)."""
        with _transaction(self._conn, read=read):
            return fn(self._conn)

    def select(self, sql: str, params: tuple[Any, ...]) -> list[Any]:
        """The rows `sql` selects (one statement is its own read transaction)."""
        return self._conn.execute(sql, params).fetchall()

    def append(self, events: list[RawEvent], seen: list[tuple[int, bytes]]) -> int | OutboxFull:
        """Journal `events` and record `seen` deliveries; the last journal id, or the refusal."""
        conn = self._conn
        evicted: list[_Eviction] = []
        with _transaction(conn):
            counters = load_counters(conn)
            if not events:
                return counters.journal_last_id
            first_id = counters.journal_last_id + 1
            encoded = [rows.encode_event(first_id + i, event) for i, event in enumerate(events)]
            needed = sum(row[-1] for row in encoded)
            if counters.used_bytes + needed > self._max_bytes:
                evicted = self._make_room(counters, rows.load_cursor(conn), needed)
            outcome: int | OutboxFull
            if counters.used_bytes + needed > self._max_bytes:
                self._record_gap(counters, events)
                outcome = OutboxFull(needed, self._max_bytes)
            else:
                conn.executemany(rows.INSERT_JOURNAL, encoded)
                if seen:
                    conn.executemany(rows.UPSERT_INBOUND_SEEN, seen)
                counters.journal_rows += len(encoded)
                counters.journal_last_id += len(encoded)
                counters.used_bytes += needed
                outcome = counters.journal_last_id
            save_counters(conn, counters)
        _log_evictions(evicted)
        return outcome

    def commit(
        self,
        movements: list[Movement],
        cursor: int,
        state: bytes | None,
        render: Callable[[Movement, int], bytes],
        gaps_reported: list[int],
        also: Callable[[sqlite3.Connection], None] | None = None,
    ) -> list[int]:
        """Add new movements (dedupe by id), save cursor and state, mark gaps reported; seqs.

        `also(conn)` writes what belongs with these movements (expected-returns updates).
        """
        conn = self._conn
        evicted: list[_Eviction] = []
        with _transaction(conn):
            counters = load_counters(conn)
            seen: set[str] = set()
            if movements:
                ids = json.dumps([m.id for m in movements])
                seen.update(r[0] for r in conn.execute(rows.SELECT_EXISTING_IDS, (ids,)))
            now_s = self._clock()
            added: list[tuple[int, str, bytes, float, int]] = []
            added_b = 0
            for movement in movements:
                if movement.id in seen:
                    continue
                seen.add(movement.id)
                seq = counters.last_seq + 1
                counters.last_seq = seq
                payload = render(movement, seq)
                size_b = rows.outbox_row_size_b(movement.id, payload)
                added.append((seq, movement.id, payload, now_s, size_b))
                added_b += size_b
            if added:
                conn.executemany(rows.INSERT_OUTBOX, added)
                counters.outbox_rows += len(added)
                counters.pending += len(added)
                counters.used_bytes += added_b
            conn.execute(rows.UPDATE_CHECKPOINT, (cursor, state))
            if gaps_reported:
                conn.executemany(rows.MARK_GAP_REPORTED, [(g,) for g in gaps_reported])
            if also is not None:
                also(conn)
            if counters.used_bytes > self._max_bytes:
                # Movements are never refused; the journal rows they came from make way for them.
                evicted = self._make_room(counters, cursor, 0)
            save_counters(conn, counters)
        _log_evictions(evicted)
        return [row[0] for row in added]

    def mark(self, sql: str, params: list[tuple[Any]]) -> int:
        """Run a `MARK_*` statement for each of `params`; how many rows became delivered."""
        conn = self._conn
        with _transaction(conn):
            changed = conn.executemany(sql, params).rowcount
            if changed > 0:
                counters = load_counters(conn)
                counters.pending -= changed
                counters.delivered_total += changed
                save_counters(conn, counters)
            return max(changed, 0)

    def unreported_gaps(self) -> list[tuple[Any, ...]]:
        """Gap rows not yet reported; sealed, so that later refusals open a new gap."""
        found = self._conn.execute(rows.SELECT_UNREPORTED_GAPS).fetchall()
        self._sealed_gaps.update(int(r[0]) for r in found)
        return found

    def prune(self, older_than_s: float, limit: int) -> int:
        """Delete at most `limit` delivered movements created before `older_than_s`; how many."""
        conn = self._conn
        with _transaction(conn):
            found = conn.execute(rows.SELECT_PRUNABLE, (older_than_s, limit)).fetchall()
            if not found:
                return 0
            conn.executemany(rows.DELETE_OUTBOX, [(r[0],) for r in found])
            counters = load_counters(conn)
            counters.outbox_rows -= len(found)
            counters.used_bytes -= sum(int(r[1]) for r in found)
            save_counters(conn, counters)
            return len(found)

    def kv_put(self, key: str, value: bytes) -> None:
        """Store `value` under `key`, replacing any previous value."""
        with _transaction(self._conn):
            self._conn.execute(rows.UPSERT_KV, (key, value))

    def stats(self) -> BufferStats:
        """Counters, cursor and the oldest pending row, read in one snapshot."""
        conn = self._conn
        with _transaction(conn, read=True):
            counters = load_counters(conn)
            cursor = rows.load_cursor(conn)
            oldest = conn.execute(rows.SELECT_OLDEST_PENDING).fetchone()
        return BufferStats(
            path=str(self._path),
            file_bytes=disk_bytes(self._path),
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

    def _make_room(self, counters: Counters, cursor: int, needed: int) -> list[_Eviction]:
        """Evict in the caller's transaction; what went, to log once it is committed."""
        hard = self._max_bytes - needed
        soft = hard - int(self._max_bytes * EVICTION_HEADROOM_SHARE)
        evicted: list[_Eviction] = []
        if counters.used_bytes > hard:
            freed, deleted = _evict(
                self._conn, rows.SELECT_CONSUMED, rows.DELETE_JOURNAL, (cursor,), counters, soft
            )
            counters.journal_rows -= deleted
            if deleted:
                evicted.append(("journal_rows_evicted", deleted, freed))
        if counters.used_bytes > hard:
            freed, deleted = _evict(
                self._conn, rows.SELECT_DELIVERED, rows.DELETE_OUTBOX, (), counters, soft
            )
            counters.outbox_rows -= deleted
            if deleted:
                evicted.append(("delivered_movements_evicted", deleted, freed))
        return evicted

    def _record_gap(self, counters: Counters, events: list[RawEvent]) -> None:
        conn = self._conn
        first_s = min(e.at_s for e in events)
        last_s = max(e.at_s for e in events)
        latest = conn.execute(rows.SELECT_OPEN_GAP, (rows.GAP_REASON_FULL,)).fetchone()
        if latest is not None and latest[0] not in self._sealed_gaps:
            conn.execute(
                rows.GROW_GAP,
                (len(events), min(first_s, latest[1]), max(last_s, latest[2]), latest[0]),
            )
        else:
            conn.execute(
                rows.INSERT_GAP,
                (len(events), first_s, last_s, rows.GAP_REASON_FULL, self._clock()),
            )
            counters.gaps_total += 1
        counters.refused_events_total += len(events)


# (event name, rows, bytes freed) of one eviction, logged after its commit.
_Eviction = tuple[str, int, int]


def _log_evictions(evicted: list[_Eviction]) -> None:
    for event, deleted, freed in evicted:
        if event == "journal_rows_evicted":
            _log.info(event, rows=deleted, freed_bytes=freed)
        else:
            _log.warning(event, rows=deleted, freed_bytes=freed)


@contextmanager
def _transaction(conn: sqlite3.Connection, *, read: bool = False) -> Iterator[None]:
    """One transaction: committed at the end, or rolled back entirely so it can run again."""
    if conn.in_transaction:
        # A ROLLBACK that failed last time (a disk error) left this one open.
        conn.execute("ROLLBACK")
    conn.execute("BEGIN" if read else "BEGIN IMMEDIATE")
    try:
        yield
        # A COMMIT that fails (busy, disk error) may leave the transaction open: it goes below.
        conn.execute("COMMIT")
    except BaseException:
        # SQLite may have rolled back already (SQLITE_FULL, SQLITE_IOERR, SQLITE_BUSY).
        if conn.in_transaction:
            with suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
        raise


def _evict(
    conn: sqlite3.Connection,
    select_sql: str,
    delete_sql: str,
    params: tuple[Any, ...],
    counters: Counters,
    goal_bytes: int,
) -> tuple[int, int]:
    """Delete rows in `select_sql` order until used bytes reach `goal_bytes`; (bytes, rows)."""
    freed = 0
    deleted = 0
    while counters.used_bytes > goal_bytes:
        found = conn.execute(select_sql, (*params, _EVICT_BATCH_ROWS)).fetchall()
        if not found:
            break
        keys: list[tuple[int]] = []
        for key, size_b in found:
            keys.append((key,))
            counters.used_bytes -= size_b
            freed += size_b
            if counters.used_bytes <= goal_bytes:
                break
        conn.executemany(delete_sql, keys)
        deleted += len(keys)
    return freed, deleted

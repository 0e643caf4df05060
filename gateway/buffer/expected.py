"""Expected returns in the buffer: a million open RMAs on disk, the few a batch touches in memory.

Tables (migration 0002): `expected_rmas`, `expected_lines` (indexed by EPC, by GTIN + serial, by
GTIN for quantity lines), `expected_received`, and `expected_counters`, kept in the transactions
that change the rows so that stats are O(1).

Writers. Announcements are applied in chunks of `ANNOUNCE_CHUNK_RMAS`, one transaction each, on
the buffer's connection thread: the event loop never waits for them and scans go on between two
chunks. Every chunk is idempotent (an RMA is unique by name; `add` merges), so an announcement cut
by a crash and sent again ends with the same rows. A `replace` stamps the RMAs it carries with a
new generation, then deletes older generations in chunks: cut in the middle it leaves a superset
(nothing lost), and sent again it finishes. Receipts write increments (`write_updates`) inside the
transaction of their movements, through `Buffer.commit_pipeline(also=...)`.

`expected_counters.version` changes with every announcement, cancel and sweep (not with
receipts), so a daemon that keeps a slice in memory notices what `gateway expected import` wrote
on another connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import sqlite3
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from gateway.domain.expected import (
    ExpectedLine,
    ExpectedUpdates,
    LookupKey,
    ParsedCommand,
    Refusal,
    Rma,
    parse_command,
)
from gateway.errors import InputError

if TYPE_CHECKING:
    from contextlib import AbstractAsyncContextManager

    from gateway.buffer.store import Buffer

ANNOUNCE_CHUNK_RMAS = 2000
PARSE_SLICE_RMAS = 200
DELETE_CHUNK_RMAS = 5000
SWEEP_CHUNK_RMAS = 5000
MAX_STORED_RMAS = 2_000_000
# Quantity lines of one GTIN fetched per lookup: enough for every unit a batch can bring.
GTIN_OPEN_LINES_FETCHED = 256
# Approximate SQLite cost of a row and its index entries, as the journal's byte budget does.
RMA_ROW_OVERHEAD_B = 70
LINE_ROW_OVERHEAD_B = 60


@dataclass(frozen=True, slots=True)
class ExpectedStats:
    """Counters of the registry (O(1) reads) and the RMAs past their expiry not yet swept."""

    rmas: int
    open_rmas: int
    lines: int
    open_lines: int
    expired_waiting: int
    expired_total: int
    estimated_bytes: int
    version: int

    def as_dict(self) -> dict[str, int]:
        """JSON-safe form."""
        return {
            "rmas": self.rmas,
            "open_rmas": self.open_rmas,
            "lines": self.lines,
            "open_lines": self.open_lines,
            "expired_waiting": self.expired_waiting,
            "expired_total": self.expired_total,
            "estimated_bytes": self.estimated_bytes,
        }


@dataclass(frozen=True, slots=True)
class Fetched:
    """RMAs read for a set of keys, and the registry version they were read at."""

    version: int
    rmas: list[Rma]
    keys: set[LookupKey]
    all_keys: bool


@dataclass(frozen=True, slots=True)
class ChunkOutcome:
    """What one chunk of an announcement did."""

    accepted: int
    cancelled: int
    refused: list[Refusal]
    open_rmas: int = 0


class ExpectedStore:
    """The registry of expected returns in a buffer file; each method runs whole transactions."""

    def __init__(self, buffer: Buffer) -> None:
        self._buffer = buffer

    async def fetch(
        self,
        keys: set[LookupKey],
        missing: set[LookupKey],
        known_version: int | None,
        *,
        reload: bool = True,
    ) -> Fetched:
        """RMAs for `missing`, or for all `keys` if the registry changed since `known_version`.

        With `reload=False` (the caller holds changes not yet written) only `missing` is read
        and the version reported is `known_version`, so the reload happens on a later call.
        """
        return await self._buffer.run_read(
            lambda conn: _fetch(conn, keys, missing, known_version, reload=reload)
        )

    async def announce(
        self,
        command: dict[str, Any],
        *,
        guard: Callable[[], AbstractAsyncContextManager[Any]] | None = None,
        after_chunk: Callable[[], None] | None = None,
    ) -> dict[str, Any]:
        """Apply an `expected-returns` command in chunks; the result names refused entries.

        `guard()` is entered around each chunk (the daemon's pipeline lock) and `after_chunk`
        called inside it, so a slice in memory is dropped before the next receipt reads it.
        InputError for a command malformed as a whole (nothing applied).
        """
        # Parsing costs more than writing: it runs before the chunks, outside the guard, in slices
        # that let the loop serve scans in between (a worker thread would fight the loop for the
        # GIL instead). A command malformed as a whole raises here and nothing is applied.
        parsed = await _parse_in_slices(command)
        action = parsed.action
        refused: list[Refusal] = list(parsed.refused)
        accepted = 0
        cancelled = 0
        locked = guard or _no_guard
        gen: int | None = None
        outcome: ChunkOutcome | None = None
        if action == "replace":
            async with locked():
                gen = await self.begin_replace()
        items: list[Any] = parsed.cancel if action == "cancel" else parsed.rmas
        for start, chunk in _chunks(items, ANNOUNCE_CHUNK_RMAS) if items else [(0, [])]:
            part = ParsedCommand(
                action,
                [] if action == "cancel" else chunk,
                chunk if action == "cancel" else [],
                [],
            )
            async with locked():
                outcome = await self._buffer.run_write(
                    functools.partial(_write, parsed=part, offset=start, replace_gen=gen)
                )
                if after_chunk is not None:
                    after_chunk()
            refused += outcome.refused
            accepted += outcome.accepted
            cancelled += outcome.cancelled
        if gen is not None and parsed.refused:
            # A refused entry of a replace must not cost the RMA already stored under its name.
            names = [r.rma for r in parsed.refused if r.rma is not None]
            await self._buffer.run_write(lambda conn: _keep(conn, names, gen))
        if gen is not None:
            await self.finish_replace(gen, guard=guard, after_chunk=after_chunk)
            outcome = None
        open_rmas = outcome.open_rmas if outcome is not None else (await self.stats()).open_rmas
        result: dict[str, Any] = {"action": action, "open": open_rmas}
        if action == "cancel":
            result["cancelled"] = cancelled
        else:
            result["accepted"] = accepted
        result["refused"] = [r.as_dict() for r in refused]
        return result

    async def begin_replace(self) -> int:
        """Start a replace: the generation its chunks stamp on the RMAs they carry."""
        return await self._buffer.run_write(_begin_replace)

    async def apply_chunk(
        self, body: dict[str, Any], offset: int, replace_gen: int | None = None
    ) -> ChunkOutcome:
        """One transaction: parse `body` entry by entry and store it (refusal indexes + offset)."""
        return await self._buffer.run_write(
            functools.partial(_apply, body=body, offset=offset, replace_gen=replace_gen)
        )

    async def finish_replace(
        self,
        gen: int,
        *,
        guard: Callable[[], AbstractAsyncContextManager[Any]] | None = None,
        after_chunk: Callable[[], None] | None = None,
    ) -> int:
        """Delete, in bounded transactions, every RMA the replace of `gen` did not carry."""
        locked = guard or _no_guard
        total = 0
        while True:
            async with locked():
                deleted = await self._buffer.run_write(
                    lambda conn: _delete_older(conn, gen, DELETE_CHUNK_RMAS)
                )
                if after_chunk is not None:
                    after_chunk()
            total += deleted
            if deleted < DELETE_CHUNK_RMAS:
                return total

    async def sweep_expired(
        self,
        now_s: float,
        *,
        guard: Callable[[], AbstractAsyncContextManager[Any]] | None = None,
        after_chunk: Callable[[], None] | None = None,
    ) -> int:
        """Close RMAs whose `expires_at` is before `now_s`, in bounded transactions; how many."""
        total = 0
        locked = guard or _no_guard
        while True:
            async with locked():
                swept = await self._buffer.run_write(
                    lambda conn: _sweep(conn, now_s, SWEEP_CHUNK_RMAS)
                )
                if swept and after_chunk is not None:
                    after_chunk()
            total += swept
            if swept < SWEEP_CHUNK_RMAS:
                return total

    async def stats(self, now_s: float | None = None) -> ExpectedStats:
        """Counters, and (with `now_s`) how many RMAs are past their expiry but not yet swept."""
        return await self._buffer.run_read(lambda conn: _stats(conn, now_s))

    async def import_rmas(self, rmas: Sequence[Rma]) -> int:
        """Store RMAs with what already arrived of them (a registry from an older snapshot)."""

        def write(conn: sqlite3.Connection) -> int:
            counters = _Counters.load(conn)
            for rma in rmas:
                _upsert(conn, counters, rma, counters.gen, keep_existing=True)
            counters.version += 1
            counters.save(conn)
            return len(rmas)

        return await self._buffer.run_write(write)


def write_updates(conn: sqlite3.Connection, updates: ExpectedUpdates) -> None:
    """Add receipts' increments (inside the transaction that stores their movements)."""
    if not updates:
        return
    counters = _Counters.load(conn)
    ids: dict[str, int | None] = {}

    def rma_id(name: str) -> int | None:
        if name not in ids:
            row = conn.execute("SELECT id FROM expected_rmas WHERE rma = ?", (name,)).fetchone()
            ids[name] = None if row is None else int(row[0])
        return ids[name]

    for (name, line), added in updates.lines.items():
        found = rma_id(name)
        if found is not None:  # else cancelled meanwhile by another connection
            counters.open_lines -= _add_to_line(conn, found, line, added)
    received_rows = []
    for (name, item), added in updates.received.items():
        found = rma_id(name)
        if found is not None:
            received_rows.append((found, item, added))
    conn.executemany(
        "INSERT INTO expected_received (rma_id, item, times) VALUES (?, ?, ?)"
        " ON CONFLICT (rma_id, item) DO UPDATE SET times = times + excluded.times",
        received_rows,
    )
    for name in updates.completed:
        found = rma_id(name)
        if found is None:
            continue
        changed = conn.execute(
            "UPDATE expected_rmas SET completed = 1 WHERE id = ? AND completed = 0", (found,)
        ).rowcount
        counters.open_rmas -= max(changed, 0)
    counters.save(conn)


# -- private -------------------------------------------------------------------------------------


def _add_to_line(conn: sqlite3.Connection, rma_id: int, line: int, added: int) -> int:
    """Count `added` units on a line; 1 if that filled it (one open line fewer), else 0."""
    row = conn.execute(
        "SELECT received, qty, full FROM expected_lines WHERE rma_id = ? AND line = ?",
        (rma_id, line),
    ).fetchone()
    if row is None:
        return 0
    received = int(row[0]) + added
    full = int(received >= int(row[1]))
    conn.execute(
        "UPDATE expected_lines SET received = ?, full = ? WHERE rma_id = ? AND line = ?",
        (received, full, rma_id, line),
    )
    if full and not row[2]:
        conn.execute("UPDATE expected_rmas SET open_lines = open_lines - 1 WHERE id = ?", (rma_id,))
        return 1
    return 0


@dataclass(slots=True)
class _Counters:
    rmas: int
    open_rmas: int
    lines: int
    open_lines: int
    bytes: int
    expired_total: int
    gen: int
    version: int

    @classmethod
    def load(cls, conn: sqlite3.Connection) -> _Counters:
        row = conn.execute(_SELECT_COUNTERS).fetchone()
        return cls(*(int(v) for v in row))

    def save(self, conn: sqlite3.Connection) -> None:
        conn.execute(
            "UPDATE expected_counters SET rmas = ?, open_rmas = ?, lines = ?, open_lines = ?,"
            " bytes = ?, expired_total = ?, gen = ?, version = ? WHERE one = 1",
            (
                self.rmas,
                self.open_rmas,
                self.lines,
                self.open_lines,
                self.bytes,
                self.expired_total,
                self.gen,
                self.version,
            ),
        )


_SELECT_COUNTERS = (
    "SELECT rmas, open_rmas, lines, open_lines, bytes, expired_total, gen, version"
    " FROM expected_counters WHERE one = 1"
)


@contextlib.asynccontextmanager
async def _no_guard() -> AsyncIterator[None]:
    yield


async def _parse_in_slices(command: dict[str, Any]) -> ParsedCommand:
    entries = command.get("rmas")
    if not isinstance(entries, list) or len(entries) <= PARSE_SLICE_RMAS:
        return parse_command(command)
    head = parse_command({**command, "rmas": []})  # the command's shape, once
    rmas: list[Rma] = []
    cancel: list[str] = []
    refused: list[Refusal] = []
    for start, part in _chunks(entries, PARSE_SLICE_RMAS):
        await asyncio.sleep(0)
        parsed = parse_command({**command, "rmas": part})
        rmas += parsed.rmas
        cancel += parsed.cancel
        refused += [Refusal(r.index + start, r.reason, r.rma) for r in parsed.refused]
    return ParsedCommand(head.action, rmas, cancel, refused)


def _chunks(entries: list[Any], size: int) -> Iterable[tuple[int, list[Any]]]:
    for start in range(0, len(entries), size):
        yield start, entries[start : start + size]


def _begin_replace(conn: sqlite3.Connection) -> int:
    counters = _Counters.load(conn)
    counters.gen += 1
    counters.version += 1
    counters.save(conn)
    return counters.gen


def _apply(
    conn: sqlite3.Connection, body: dict[str, Any], offset: int, replace_gen: int | None
) -> ChunkOutcome:
    """One chunk: parse (refusing entries one by one) and write, in the caller's transaction."""
    try:
        parsed = parse_command(body)
    except InputError as exc:
        # Only a single-RMA command gets here malformed; it is refused as a whole, at index 0.
        return ChunkOutcome(0, 0, [Refusal(offset, exc.reason)])
    outcome = _write(conn, parsed, offset, replace_gen)
    if replace_gen is not None:
        _keep(conn, [r.rma for r in parsed.refused if r.rma is not None], replace_gen)
    refused = [Refusal(r.index + offset, r.reason, r.rma) for r in parsed.refused]
    return ChunkOutcome(
        outcome.accepted, outcome.cancelled, refused + outcome.refused, outcome.open_rmas
    )


def _keep(conn: sqlite3.Connection, names: list[str], gen: int) -> None:
    conn.executemany("UPDATE expected_rmas SET gen = ? WHERE rma = ?", [(gen, n) for n in names])


def _write(
    conn: sqlite3.Connection, parsed: ParsedCommand, offset: int, replace_gen: int | None
) -> ChunkOutcome:
    """Store parsed RMAs or cancel them, in the caller's transaction (refusals: store full)."""
    refused: list[Refusal] = []
    counters = _Counters.load(conn)
    counters.version += 1
    if parsed.action == "cancel":
        cancelled = 0
        for name in parsed.cancel:
            row = conn.execute(_SELECT_RMA, (name,)).fetchone()
            if row is not None:
                _delete(conn, counters, row)
                cancelled += 1
        counters.save(conn)
        return ChunkOutcome(0, cancelled, refused, counters.open_rmas)
    gen = counters.gen if replace_gen is None else replace_gen
    accepted = _insert_new(conn, counters, parsed.rmas, gen)
    for index, rma in enumerate(parsed.rmas[accepted:], accepted):
        if (
            counters.rmas >= MAX_STORED_RMAS
            and conn.execute(_SELECT_RMA, (rma.rma,)).fetchone() is None
        ):
            refused.append(
                Refusal(offset + index, f"more than {MAX_STORED_RMAS} RMAs stored", rma.rma)
            )
            continue
        _upsert(conn, counters, rma, gen, keep_existing=True)
        accepted += 1
    counters.save(conn)
    return ChunkOutcome(accepted, 0, refused, counters.open_rmas)


_SELECT_RMA = "SELECT id, completed, open_lines, size_b FROM expected_rmas WHERE rma = ?"


def _insert_new(conn: sqlite3.Connection, counters: _Counters, rmas: list[Rma], gen: int) -> int:
    """Insert the leading RMAs of a chunk that are new, in bulk; how many (the rest: one by one).

    The common announcement is all new RMAs: a few statements per chunk instead of per RMA.
    """
    names = [rma.rma for rma in rmas]
    if len(set(names)) != len(names) or counters.rmas + len(names) > MAX_STORED_RMAS:
        return 0
    stored = {
        str(row[0])
        for row in conn.execute(
            "SELECT rma FROM expected_rmas WHERE rma IN (SELECT value FROM json_each(?))",
            (json.dumps(names),),
        )
    }
    count = next((i for i, name in enumerate(names) if name in stored), len(names))
    first_id = _next_rma_id(conn)
    rma_rows = []
    line_rows = []
    for offset, rma in enumerate(rmas[:count]):
        rma_id = first_id + offset
        size_b = _size_b(rma)
        rma_rows.append(
            (rma_id, rma.rma, rma.customer, rma.expires_at_s, len(rma.lines), gen, size_b)
        )
        line_rows += [
            (rma_id, index, line.epc, line.gtin, line.serial, line.qty, 0, 0)
            for index, line in enumerate(rma.lines)
        ]
        counters.bytes += size_b
    conn.executemany(
        "INSERT INTO expected_rmas (id, rma, customer, expires_at_s, completed, open_lines, gen,"
        " size_b) VALUES (?, ?, ?, ?, 0, ?, ?, ?)",
        rma_rows,
    )
    conn.executemany(_INSERT_LINE, line_rows)
    counters.rmas += count
    counters.open_rmas += count
    counters.lines += len(line_rows)
    counters.open_lines += len(line_rows)
    return count


def _upsert(
    conn: sqlite3.Connection, counters: _Counters, rma: Rma, gen: int, *, keep_existing: bool
) -> None:
    """Store one RMA; one stored under its name keeps what arrived of its lines (add merges)."""
    row = conn.execute(_SELECT_RMA, (rma.rma,)).fetchone() if keep_existing else None
    counts = list(rma.line_counts) + [0] * (len(rma.lines) - len(rma.line_counts))
    completed = rma.completed
    if row is not None:
        rma_id, was_completed = int(row[0]), bool(row[1])
        old = conn.execute(
            "SELECT line, received, full FROM expected_lines WHERE rma_id = ? ORDER BY line",
            (rma_id,),
        ).fetchall()
        for line, received, _ in old:
            if line < len(counts):
                counts[line] = max(counts[line], int(received))
        counters.lines -= len(old)
        counters.open_lines -= sum(1 for _, _, full in old if not full)
        counters.bytes -= int(row[3])
        counters.open_rmas -= 0 if was_completed else 1
        conn.execute("DELETE FROM expected_lines WHERE rma_id = ?", (rma_id,))
        completed = was_completed and all(
            c >= line.qty for c, line in zip(counts, rma.lines, strict=True)
        )
    else:
        rma_id = _next_rma_id(conn)
        counters.rmas += 1
    lines = [
        (rma_id, index, line.epc, line.gtin, line.serial, line.qty, count, int(count >= line.qty))
        for index, (line, count) in enumerate(zip(rma.lines, counts, strict=True))
    ]
    open_lines = sum(1 for row_ in lines if not row_[-1])
    size_b = _size_b(rma)
    conn.execute(
        "INSERT INTO expected_rmas (id, rma, customer, expires_at_s, completed, open_lines, gen,"
        " size_b) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET"
        " customer = excluded.customer, expires_at_s = excluded.expires_at_s,"
        " completed = excluded.completed, open_lines = excluded.open_lines, gen = excluded.gen,"
        " size_b = excluded.size_b",
        (rma_id, rma.rma, rma.customer, rma.expires_at_s, int(completed), open_lines, gen, size_b),
    )
    conn.executemany(_INSERT_LINE, lines)
    if rma.received:
        conn.executemany(
            "INSERT INTO expected_received (rma_id, item, times) VALUES (?, ?, ?)"
            " ON CONFLICT (rma_id, item) DO UPDATE SET times = max(times, excluded.times)",
            [(rma_id, item, times) for item, times in rma.received.items()],
        )
    counters.lines += len(lines)
    counters.open_lines += open_lines
    counters.open_rmas += 0 if completed else 1
    counters.bytes += size_b


_INSERT_LINE = (
    "INSERT INTO expected_lines (rma_id, line, epc, gtin, serial, qty, received, full)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)


def _next_rma_id(conn: sqlite3.Connection) -> int:
    # max(id) on the rowid is one b-tree descent; ids are never reused while rows remain.
    return int(conn.execute("SELECT coalesce(max(id), 0) + 1 FROM expected_rmas").fetchone()[0])


def _size_b(rma: Rma) -> int:
    size = RMA_ROW_OVERHEAD_B + len(rma.rma) + len(rma.customer or "")
    for line in rma.lines:
        size += LINE_ROW_OVERHEAD_B + len(line.epc or "") + len(line.gtin or "")
        size += len(line.serial or "")
    return size


def _delete(conn: sqlite3.Connection, counters: _Counters, row: Sequence[Any]) -> None:
    rma_id, completed, open_lines, size_b = int(row[0]), bool(row[1]), int(row[2]), int(row[3])
    lines = conn.execute("DELETE FROM expected_lines WHERE rma_id = ?", (rma_id,)).rowcount
    conn.execute("DELETE FROM expected_received WHERE rma_id = ?", (rma_id,))
    conn.execute("DELETE FROM expected_rmas WHERE id = ?", (rma_id,))
    counters.rmas -= 1
    counters.open_rmas -= 0 if completed else 1
    counters.lines -= max(lines, 0)
    counters.open_lines -= open_lines
    counters.bytes -= size_b


def _delete_older(conn: sqlite3.Connection, gen: int, limit: int) -> int:
    rows = conn.execute(
        "SELECT id, completed, open_lines, size_b FROM expected_rmas WHERE gen < ? LIMIT ?",
        (gen, limit),
    ).fetchall()
    if not rows:
        return 0
    counters = _Counters.load(conn)
    for row in rows:
        _delete(conn, counters, row)
    counters.version += 1
    counters.save(conn)
    return len(rows)


def _sweep(conn: sqlite3.Connection, now_s: float, limit: int) -> int:
    rows = conn.execute(
        "SELECT id, completed, open_lines, size_b FROM expected_rmas"
        " WHERE expires_at_s IS NOT NULL AND expires_at_s < ? ORDER BY expires_at_s LIMIT ?",
        (now_s, limit),
    ).fetchall()
    if not rows:
        return 0
    counters = _Counters.load(conn)
    for row in rows:
        _delete(conn, counters, row)
    counters.expired_total += len(rows)
    counters.version += 1
    counters.save(conn)
    return len(rows)


def _stats(conn: sqlite3.Connection, now_s: float | None) -> ExpectedStats:
    counters = _Counters.load(conn)
    waiting = 0
    if now_s is not None:
        waiting = int(
            conn.execute(
                "SELECT count(*) FROM expected_rmas"
                " WHERE expires_at_s IS NOT NULL AND expires_at_s < ?",
                (now_s,),
            ).fetchone()[0]
        )
    return ExpectedStats(
        rmas=counters.rmas,
        open_rmas=counters.open_rmas,
        lines=counters.lines,
        open_lines=counters.open_lines,
        expired_waiting=waiting,
        expired_total=counters.expired_total,
        estimated_bytes=counters.bytes,
        version=counters.version,
    )


def _fetch(
    conn: sqlite3.Connection,
    keys: set[LookupKey],
    missing: set[LookupKey],
    known_version: int | None,
    *,
    reload: bool,
) -> Fetched:
    version = int(conn.execute("SELECT version FROM expected_counters WHERE one = 1").fetchone()[0])
    all_keys = known_version != version
    if all_keys and not reload and known_version is not None:
        all_keys, version = False, known_version
    wanted = keys if all_keys else missing
    ids: set[int] = set()
    for key in wanted:
        if key[0] == "epc":
            rows = conn.execute(
                "SELECT rma_id FROM expected_lines WHERE epc = ?", (key[1],)
            ).fetchall()
        elif key[0] == "serial":
            rows = conn.execute(
                "SELECT rma_id FROM expected_lines WHERE gtin = ? AND serial = ?"
                " AND epc IS NULL AND serial IS NOT NULL",
                (key[1], key[2]),
            ).fetchall()
        else:
            rows = conn.execute(_OPEN_QTY_LINES, (key[1], GTIN_OPEN_LINES_FETCHED)).fetchall()
            # The first line of the GTIN, full or not: units beyond every quantity are duplicates.
            rows += conn.execute(_FIRST_QTY_LINE, (key[1],)).fetchall()
        ids.update(int(r[0]) for r in rows)
    rmas = [_load_rma(conn, rma_id) for rma_id in sorted(ids)]
    return Fetched(version=version, rmas=rmas, keys=set(wanted), all_keys=all_keys)


_OPEN_QTY_LINES = (
    "SELECT rma_id FROM expected_lines WHERE gtin = ? AND full = 0"
    " AND epc IS NULL AND serial IS NULL ORDER BY rma_id, line LIMIT ?"
)
_FIRST_QTY_LINE = (
    "SELECT rma_id FROM expected_lines WHERE gtin = ? AND epc IS NULL AND serial IS NULL"
    " ORDER BY rma_id LIMIT 1"
)


def _load_rma(conn: sqlite3.Connection, rma_id: int) -> Rma:
    name, customer, expires_at_s, completed = conn.execute(
        "SELECT rma, customer, expires_at_s, completed FROM expected_rmas WHERE id = ?",
        (rma_id,),
    ).fetchone()
    lines: list[ExpectedLine] = []
    counts: list[int] = []
    for epc, gtin, serial, qty, received in conn.execute(
        "SELECT epc, gtin, serial, qty, received FROM expected_lines WHERE rma_id = ?"
        " ORDER BY line",
        (rma_id,),
    ):
        lines.append(ExpectedLine(epc=epc, gtin=gtin, serial=serial, qty=int(qty)))
        counts.append(int(received))
    received_items = {
        str(item): int(times)
        for item, times in conn.execute(
            "SELECT item, times FROM expected_received WHERE rma_id = ?", (rma_id,)
        )
    }
    return Rma(
        rma=str(name),
        customer=customer,
        lines=lines,
        expires_at_s=expires_at_s,
        received=received_items,
        line_counts=counts,
        completed=bool(completed),
    )

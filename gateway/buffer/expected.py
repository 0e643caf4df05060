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
import sqlite3
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from gateway.buffer.expected_writes import (
    ChunkOutcome,
    Counters,
    apply_body,
    begin_replace,
    delete_older,
    keep_generation,
    sweep_rows,
    upsert,
    write_parsed,
)
from gateway.domain.expected import (
    ExpectedLine,
    ExpectedUpdates,
    LookupKey,
    ParsedCommand,
    Refusal,
    Rma,
    parse_command,
)

if TYPE_CHECKING:
    from contextlib import AbstractAsyncContextManager

    from gateway.buffer.store import Buffer

ANNOUNCE_CHUNK_RMAS = 2000
PARSE_SLICE_RMAS = 200
DELETE_CHUNK_RMAS = 5000
SWEEP_CHUNK_RMAS = 5000
# Quantity lines of one GTIN fetched per lookup: enough for every unit a batch can bring.
GTIN_OPEN_LINES_FETCHED = 256


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
        return await self._buffer.run_transaction(
            lambda conn: _fetch(conn, keys, missing, known_version, reload=reload), read=True
        )

    async def fetch_rmas(self, names: list[str]) -> list[Rma]:
        """The stored RMAs of these names (a lookup by RMA)."""

        def read(conn: sqlite3.Connection) -> list[Rma]:
            found = []
            for name in names:
                row = conn.execute("SELECT id FROM expected_rmas WHERE rma = ?", (name,)).fetchone()
                if row is not None:
                    found.append(_load_rma(conn, int(row[0])))
            return found

        return await self._buffer.run_transaction(read, read=True)

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
                outcome = await self._buffer.run_transaction(
                    functools.partial(write_parsed, parsed=part, offset=start, replace_gen=gen)
                )
                if after_chunk is not None:
                    after_chunk()
            refused += outcome.refused
            accepted += outcome.accepted
            cancelled += outcome.cancelled
        if gen is not None and parsed.refused:
            # A refused entry of a replace must not cost the RMA already stored under its name.
            names = [r.rma for r in parsed.refused if r.rma is not None]
            await self._buffer.run_transaction(lambda conn: keep_generation(conn, names, gen))
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
        return await self._buffer.run_transaction(begin_replace)

    async def apply_chunk(
        self, body: dict[str, Any], offset: int, replace_gen: int | None = None
    ) -> ChunkOutcome:
        """One transaction: parse `body` entry by entry and store it (refusal indexes + offset)."""
        return await self._buffer.run_transaction(
            functools.partial(apply_body, body=body, offset=offset, replace_gen=replace_gen)
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
                deleted = await self._buffer.run_transaction(
                    lambda conn: delete_older(conn, gen, DELETE_CHUNK_RMAS)
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
                swept = await self._buffer.run_transaction(
                    lambda conn: sweep_rows(conn, now_s, SWEEP_CHUNK_RMAS)
                )
                if swept and after_chunk is not None:
                    after_chunk()
            total += swept
            if swept < SWEEP_CHUNK_RMAS:
                return total

    async def stats(self, now_s: float | None = None) -> ExpectedStats:
        """Counters, and (with `now_s`) how many RMAs are past their expiry but not yet swept."""
        return await self._buffer.run_transaction(lambda conn: _stats(conn, now_s), read=True)

    async def import_rmas(self, rmas: Sequence[Rma]) -> int:
        """Store RMAs with what already arrived of them (a registry from an older snapshot)."""

        def write(conn: sqlite3.Connection) -> int:
            counters = Counters.load(conn)
            for rma in rmas:
                upsert(conn, counters, rma, counters.gen, keep_existing=True)
            counters.version += 1
            counters.save(conn)
            return len(rmas)

        return await self._buffer.run_transaction(write)


def write_updates(conn: sqlite3.Connection, updates: ExpectedUpdates) -> None:
    """Add receipts' increments (inside the transaction that stores their movements)."""
    if not updates:
        return
    counters = Counters.load(conn)
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


def _stats(conn: sqlite3.Connection, now_s: float | None) -> ExpectedStats:
    counters = Counters.load(conn)
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

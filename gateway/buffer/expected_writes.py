"""Writes of announcements to the expected-returns tables, each in the caller's transaction.

New RMAs of a chunk go in bulk; an RMA stored already is merged (what arrived of its lines is
kept); counters in `expected_counters` change in the same transaction as the rows.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from gateway.domain.expected import ParsedCommand, Refusal, Rma, parse_command
from gateway.errors import InputError

MAX_STORED_RMAS = 2_000_000
# Approximate SQLite cost of a row and its index entries, as the journal's byte budget does.
RMA_ROW_OVERHEAD_B = 70
LINE_ROW_OVERHEAD_B = 60


@dataclass(frozen=True, slots=True)
class ChunkOutcome:
    """What one chunk of an announcement did."""

    accepted: int
    cancelled: int
    refused: list[Refusal]
    open_rmas: int = 0


@dataclass(slots=True)
class Counters:
    """The `expected_counters` row."""

    rmas: int
    open_rmas: int
    lines: int
    open_lines: int
    bytes: int
    expired_total: int
    gen: int
    version: int

    @classmethod
    def load(cls, conn: sqlite3.Connection) -> Counters:
        """The counters as stored."""
        row = conn.execute(_SELECT_COUNTERS).fetchone()
        return cls(*(int(v) for v in row))

    def save(self, conn: sqlite3.Connection) -> None:
        """Store the counters (in the caller's transaction)."""
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


def begin_replace(conn: sqlite3.Connection) -> int:
    """Start a replace: bump and return the generation its chunks stamp on their RMAs."""
    counters = Counters.load(conn)
    counters.gen += 1
    counters.version += 1
    counters.save(conn)
    return counters.gen


def apply_body(
    conn: sqlite3.Connection, body: dict[str, Any], offset: int, replace_gen: int | None
) -> ChunkOutcome:
    """One chunk: parse (refusing entries one by one) and write, in the caller's transaction."""
    try:
        parsed = parse_command(body)
    except InputError as exc:
        # Only a single-RMA command gets here malformed; it is refused as a whole, at index 0.
        return ChunkOutcome(0, 0, [Refusal(offset, exc.reason)])
    outcome = write_parsed(conn, parsed, offset, replace_gen)
    if replace_gen is not None:
        keep_generation(conn, [r.rma for r in parsed.refused if r.rma is not None], replace_gen)
    refused = [Refusal(r.index + offset, r.reason, r.rma) for r in parsed.refused]
    return ChunkOutcome(
        outcome.accepted, outcome.cancelled, refused + outcome.refused, outcome.open_rmas
    )


def keep_generation(conn: sqlite3.Connection, names: list[str], gen: int) -> None:
    """Stamp RMAs with `gen` so that the replace of `gen` keeps them."""
    conn.executemany("UPDATE expected_rmas SET gen = ? WHERE rma = ?", [(gen, n) for n in names])


def write_parsed(
    conn: sqlite3.Connection, parsed: ParsedCommand, offset: int, replace_gen: int | None
) -> ChunkOutcome:
    """Store parsed RMAs or cancel them, in the caller's transaction (refusals: store full)."""
    refused: list[Refusal] = []
    counters = Counters.load(conn)
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
        upsert(conn, counters, rma, gen, keep_existing=True)
        accepted += 1
    counters.save(conn)
    return ChunkOutcome(accepted, 0, refused, counters.open_rmas)


_SELECT_RMA = "SELECT id, completed, open_lines, size_b FROM expected_rmas WHERE rma = ?"


def _insert_new(conn: sqlite3.Connection, counters: Counters, rmas: list[Rma], gen: int) -> int:
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


def upsert(
    conn: sqlite3.Connection, counters: Counters, rma: Rma, gen: int, *, keep_existing: bool
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


def _delete(conn: sqlite3.Connection, counters: Counters, row: Sequence[Any]) -> None:
    rma_id, completed, open_lines, size_b = int(row[0]), bool(row[1]), int(row[2]), int(row[3])
    lines = conn.execute("DELETE FROM expected_lines WHERE rma_id = ?", (rma_id,)).rowcount
    conn.execute("DELETE FROM expected_received WHERE rma_id = ?", (rma_id,))
    conn.execute("DELETE FROM expected_rmas WHERE id = ?", (rma_id,))
    counters.rmas -= 1
    counters.open_rmas -= 0 if completed else 1
    counters.lines -= max(lines, 0)
    counters.open_lines -= open_lines
    counters.bytes -= size_b


def delete_older(conn: sqlite3.Connection, gen: int, limit: int) -> int:
    """Delete up to `limit` RMAs of a generation before `gen`; how many."""
    rows = conn.execute(
        "SELECT id, completed, open_lines, size_b FROM expected_rmas WHERE gen < ? LIMIT ?",
        (gen, limit),
    ).fetchall()
    return _delete_rows(conn, rows, expired=False)


def sweep_rows(conn: sqlite3.Connection, now_s: float, limit: int) -> int:
    """Delete up to `limit` RMAs whose expiry is before `now_s`; how many."""
    rows = conn.execute(
        "SELECT id, completed, open_lines, size_b FROM expected_rmas"
        " WHERE expires_at_s IS NOT NULL AND expires_at_s < ? ORDER BY expires_at_s LIMIT ?",
        (now_s, limit),
    ).fetchall()
    return _delete_rows(conn, rows, expired=True)


def _delete_rows(conn: sqlite3.Connection, rows: list[Any], *, expired: bool) -> int:
    """Delete the selected RMAs, keeping the counters exact in the same transaction; how many."""
    if not rows:
        return 0
    counters = Counters.load(conn)
    for row in rows:
        _delete(conn, counters, row)
    if expired:
        counters.expired_total += len(rows)
    counters.version += 1
    counters.save(conn)
    return len(rows)

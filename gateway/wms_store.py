"""The reference consumer's SQLite store: movements by id, applied in seq order per gateway.

Early arrivals are parked (committed, so they can be acked) until the gap before them fills; a gap
that does not fill within the timeout is released and recorded, never silent.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from gateway.errors import InputError

# Several consumers may share one store (as a WMS's consumers share its database).
STORE_BUSY_TIMEOUT_S = 30.0
_SCHEMA = """
CREATE TABLE IF NOT EXISTS movements (
    id TEXT PRIMARY KEY,
    site TEXT NOT NULL,
    gateway TEXT NOT NULL,
    seq INTEGER NOT NULL,
    type TEXT NOT NULL,
    payload TEXT NOT NULL,
    received_at REAL NOT NULL,
    copies INTEGER NOT NULL DEFAULT 1
);
CREATE INDEX IF NOT EXISTS movements_by_gateway ON movements (site, gateway, seq);
CREATE TABLE IF NOT EXISTS streams (
    site TEXT NOT NULL,
    gateway TEXT NOT NULL,
    next_seq INTEGER NOT NULL,
    PRIMARY KEY (site, gateway)
);
CREATE TABLE IF NOT EXISTS parked (
    id TEXT PRIMARY KEY,
    site TEXT NOT NULL,
    gateway TEXT NOT NULL,
    seq INTEGER NOT NULL,
    type TEXT NOT NULL,
    payload TEXT NOT NULL,
    received_at REAL NOT NULL,
    copies INTEGER NOT NULL DEFAULT 1
);
CREATE INDEX IF NOT EXISTS parked_by_gateway ON parked (site, gateway, seq);
CREATE TABLE IF NOT EXISTS gaps (
    site TEXT NOT NULL,
    gateway TEXT NOT NULL,
    from_seq INTEGER NOT NULL,
    to_seq INTEGER NOT NULL,
    released_at REAL NOT NULL
);
"""
_COLUMNS = "id, site, gateway, seq, type, payload, received_at, copies"


@dataclass(frozen=True, slots=True)
class ParsedMovement:
    id: str
    site: str
    gateway: str
    seq: int
    type: str
    payload: str


@dataclass(slots=True)
class StoreOutcome:
    """What one committed batch did to the store."""

    new: int = 0  # arrivals with an id the store did not know
    stored: int = 0  # rows written to `movements` (new in order, late, or unparked)
    parked: int = 0
    late: int = 0  # below the expected seq with an unknown id: stored, out of order
    duplicates: int = 0


@dataclass(frozen=True, slots=True)
class Gap:
    """A run of seqs of one gateway given up on after the gap timeout."""

    site: str
    gateway: str
    from_seq: int
    to_seq: int


def open_store(path: Path) -> sqlite3.Connection:
    db = sqlite3.connect(path, timeout=STORE_BUSY_TIMEOUT_S, check_same_thread=False)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.executescript(_SCHEMA)
    return db


def store_batch(
    db: sqlite3.Connection, items: Sequence[ParsedMovement], *, ordered: bool = True
) -> StoreOutcome:
    """Apply, park or count a batch in one transaction, in seq order per gateway."""
    outcome = StoreOutcome()
    now = time.time()
    next_seqs: dict[tuple[str, str], int] = {}
    with db:
        # IMMEDIATE: consumers sharing the store must not read the same next seq at once.
        db.execute("BEGIN IMMEDIATE")
        for item in sorted(items, key=lambda i: (i.site, i.gateway, i.seq)):
            if _count_copy(db, item.id):
                outcome.duplicates += 1
                continue
            outcome.new += 1
            key = (item.site, item.gateway)
            if not ordered:
                _insert(db, "movements", item, now)
                outcome.stored += 1
                continue
            if key not in next_seqs:
                next_seqs[key] = _next_seq(db, item)
            expected = next_seqs[key]
            if item.seq > expected:
                _insert(db, "parked", item, now)
                outcome.parked += 1
                continue
            _insert(db, "movements", item, now)
            outcome.stored += 1
            if item.seq < expected:
                outcome.late += 1
                continue
            next_seqs[key], unparked = _unpark(db, item.site, item.gateway, expected + 1)
            outcome.stored += unparked
        _save_next_seqs(db, next_seqs)
    return outcome


def release_gaps(db: sqlite3.Connection, parked_before: float) -> tuple[list[Gap], int]:
    """Release every gap whose first parked successor came before `parked_before`.

    Returns the gaps (also written to `gaps`) and how many parked rows were applied.
    """
    gaps: list[Gap] = []
    unparked_total = 0
    now = time.time()
    # Read first: most checks find nothing, and need not take the store's write lock for it.
    overdue = "SELECT 1 FROM parked WHERE received_at <= ? LIMIT 1"
    if db.execute(overdue, (parked_before,)).fetchone() is None:
        return gaps, unparked_total
    with db:
        db.execute("BEGIN IMMEDIATE")
        while True:
            row = db.execute(
                "SELECT site, gateway, MIN(seq) FROM parked GROUP BY site, gateway "
                "HAVING MIN(received_at) <= ? LIMIT 1",
                (parked_before,),
            ).fetchone()
            if row is None:
                break
            site, gateway, lowest = row
            expected = _stream_next(db, site, gateway)
            if expected is not None and lowest > expected:
                gap = Gap(site, gateway, expected, lowest - 1)
                db.execute(
                    "INSERT INTO gaps (site, gateway, from_seq, to_seq, released_at) "
                    "VALUES (?, ?, ?, ?, ?)",
                    (site, gateway, gap.from_seq, gap.to_seq, now),
                )
                gaps.append(gap)
            next_seq, unparked = _unpark(db, site, gateway, lowest)
            unparked_total += unparked
            _save_next_seqs(db, {(site, gateway): next_seq})
    return gaps, unparked_total


def _count_copy(db: sqlite3.Connection, movement_id: str) -> bool:
    """Count one more copy of a known id (stored or parked); False when the id is new."""
    for table in ("movements", "parked"):
        cursor = db.execute(
            f"UPDATE {table} SET copies = copies + 1 WHERE id = ?",  # noqa: S608 - fixed names
            (movement_id,),
        )
        if cursor.rowcount:
            return True
    return False


def _insert(db: sqlite3.Connection, table: str, item: ParsedMovement, now: float) -> None:
    db.execute(
        f"INSERT INTO {table} ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, 1)",  # noqa: S608
        (item.id, item.site, item.gateway, item.seq, item.type, item.payload, now),
    )


def _stream_next(db: sqlite3.Connection, site: str, gateway: str) -> int | None:
    row = db.execute(
        "SELECT next_seq FROM streams WHERE site = ? AND gateway = ?", (site, gateway)
    ).fetchone()
    return None if row is None else int(row[0])


def _next_seq(db: sqlite3.Connection, item: ParsedMovement) -> int:
    """The seq expected next from the item's gateway; a new stream starts at this item."""
    known = _stream_next(db, item.site, item.gateway)
    if known is not None:
        return known
    # A store written before streams were tracked goes on after what it holds.
    row = db.execute(
        "SELECT MAX(seq) FROM movements WHERE site = ? AND gateway = ?", (item.site, item.gateway)
    ).fetchone()
    return item.seq if row[0] is None else int(row[0]) + 1


def _unpark(db: sqlite3.Connection, site: str, gateway: str, next_seq: int) -> tuple[int, int]:
    """Apply parked rows contiguous from `next_seq`; return the new next seq and how many."""
    moved = 0
    while True:
        rows = db.execute(
            "SELECT id, seq FROM parked WHERE site = ? AND gateway = ? AND seq <= ? "
            "ORDER BY seq, rowid",
            (site, gateway, next_seq),
        ).fetchall()
        if not rows:
            return next_seq, moved
        for movement_id, seq in rows:
            db.execute(
                f"INSERT INTO movements ({_COLUMNS}) "  # noqa: S608 - fixed names
                f"SELECT {_COLUMNS} FROM parked WHERE id = ?",
                (movement_id,),
            )
            db.execute("DELETE FROM parked WHERE id = ?", (movement_id,))
            next_seq = max(next_seq, seq + 1)
            moved += 1


def _save_next_seqs(db: sqlite3.Connection, next_seqs: dict[tuple[str, str], int]) -> None:
    db.executemany(
        "INSERT INTO streams (site, gateway, next_seq) VALUES (?, ?, ?) "
        "ON CONFLICT(site, gateway) DO UPDATE SET next_seq = excluded.next_seq",
        [(site, gateway, seq) for (site, gateway), seq in next_seqs.items()],
    )


def parse_movement(payload: bytes) -> ParsedMovement:
    try:
        message = json.loads(payload)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InputError("movement", "not JSON") from exc
    if not isinstance(message, dict):
        raise InputError("movement", "not a JSON object")
    if message.get("type") == "EPCISDocument":
        movement_id, seq = message.get("dg:movementId"), message.get("dg:seq")
        site, gateway = message.get("dg:site"), message.get("dg:gateway")
        kind = message.get("dg:movementType")
    else:
        movement_id, seq = message.get("id"), message.get("seq")
        site, gateway, kind = message.get("site"), message.get("gateway"), message.get("type")
    if not all(isinstance(v, str) for v in (movement_id, site, gateway, kind)):
        raise InputError("movement", "id, site, gateway and type must be strings")
    if isinstance(seq, bool) or not isinstance(seq, int):
        raise InputError("movement", "seq must be an integer")
    return ParsedMovement(
        id=str(movement_id),
        site=str(site),
        gateway=str(gateway),
        seq=seq,
        type=str(kind),
        payload=payload.decode(),
    )

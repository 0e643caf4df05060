"""The buffer's SQL text and the encoding of its rows: journal events, outbox rows, counters.

Byte budget. A row's share of the budget (`size_b`) is decided here, when the row is encoded:

- journal row: `JOURNAL_ROW_OVERHEAD_B` + characters of reader, station, data (EPC hex or scan
  text) and device;
- outbox row: `OUTBOX_ROW_OVERHEAD_B` + bytes of the rendered payload + characters of the id.

The overheads approximate SQLite's record, b-tree and index cost, so that used bytes track the
live data in the file (free pages left by deletions are reused, not counted).
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from typing import Any

from gateway.domain.events import BarcodeScan, RawEvent, TagRead

JOURNAL_ROW_OVERHEAD_B = 40
OUTBOX_ROW_OVERHEAD_B = 110
GAP_REASON_FULL = "buffer_full"

_KIND_TAG = 0
_KIND_BARCODE = 1


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
class Counters:
    """The one `counters` row, changed in memory and saved in the transaction that read it."""

    used_bytes: int
    journal_rows: int
    journal_last_id: int
    outbox_rows: int
    pending: int
    last_seq: int
    delivered_total: int
    gaps_total: int
    refused_events_total: int


# -- SQL -----------------------------------------------------------------------------------------

_JOURNAL_COLUMNS = "id, kind, reader, station, at_s, data, antenna, rssi, count, channel, device"
INSERT_JOURNAL = (
    "INSERT INTO journal (id, kind, reader, station, at_s, data, antenna, rssi, count, channel,"
    " device, size_b) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
SELECT_JOURNAL = f"SELECT {_JOURNAL_COLUMNS} FROM journal WHERE id > ? ORDER BY id LIMIT ?"  # noqa: S608 - constant column list, values bound
SELECT_CONSUMED = "SELECT id, size_b FROM journal WHERE id <= ? ORDER BY id LIMIT ?"
DELETE_JOURNAL = "DELETE FROM journal WHERE id = ?"
_OUTBOX_COLUMNS = "seq, id, payload, created_at_s, delivered"
INSERT_OUTBOX = (
    "INSERT INTO outbox (seq, id, payload, created_at_s, delivered, size_b)"
    " VALUES (?, ?, ?, ?, 0, ?)"
)
SELECT_EXISTING_IDS = "SELECT id FROM outbox WHERE id IN (SELECT value FROM json_each(?))"
SELECT_PENDING = (
    f"SELECT {_OUTBOX_COLUMNS} FROM outbox INDEXED BY outbox_pending"  # noqa: S608 - constant column list, values bound
    " WHERE delivered = 0 AND seq > ? ORDER BY seq LIMIT ?"
)
SELECT_PENDING_FROM = (
    f"SELECT {_OUTBOX_COLUMNS} FROM outbox INDEXED BY outbox_pending"  # noqa: S608 - constant column list, values bound
    " WHERE delivered = 0 AND seq >= ? ORDER BY seq LIMIT ?"
)
SELECT_FROM = f"SELECT {_OUTBOX_COLUMNS} FROM outbox WHERE seq >= ? ORDER BY seq LIMIT ?"  # noqa: S608 - constant column list, values bound
SELECT_BETWEEN = (
    f"SELECT {_OUTBOX_COLUMNS} FROM outbox INDEXED BY outbox_created"  # noqa: S608 - constant column list, values bound
    " WHERE created_at_s >= ? AND created_at_s <= ? ORDER BY created_at_s, seq LIMIT ?"
)
SELECT_OLDEST_PENDING = (
    "SELECT seq, created_at_s FROM outbox INDEXED BY outbox_pending"
    " WHERE delivered = 0 ORDER BY seq LIMIT 1"
)
SELECT_DELIVERED = (
    "SELECT seq, size_b FROM outbox INDEXED BY outbox_delivered"
    " WHERE delivered = 1 ORDER BY created_at_s, seq LIMIT ?"
)
SELECT_PRUNABLE = (
    "SELECT seq, size_b FROM outbox INDEXED BY outbox_delivered"
    " WHERE delivered = 1 AND created_at_s < ? ORDER BY created_at_s, seq LIMIT ?"
)
DELETE_OUTBOX = "DELETE FROM outbox WHERE seq = ?"
MARK_SEQ = "UPDATE outbox SET delivered = 1 WHERE seq = ? AND delivered = 0"
MARK_ID = "UPDATE outbox SET delivered = 1 WHERE id = ? AND delivered = 0"
MARK_UPTO = (
    "UPDATE outbox INDEXED BY outbox_pending SET delivered = 1 WHERE delivered = 0 AND seq <= ?"
)
SELECT_CHECKPOINT = "SELECT cursor, state FROM checkpoint WHERE one = 1"
UPDATE_CHECKPOINT = "UPDATE checkpoint SET cursor = ?, state = ? WHERE one = 1"
SELECT_UNREPORTED_GAPS = (
    "SELECT gap_id, refused_events, first_at_s, last_at_s, reason FROM gaps"
    " WHERE reported = 0 ORDER BY gap_id"
)
SELECT_OPEN_GAP = (
    "SELECT gap_id, first_at_s, last_at_s FROM gaps WHERE reported = 0 AND reason = ?"
    " ORDER BY gap_id DESC LIMIT 1"
)
GROW_GAP = (
    "UPDATE gaps SET refused_events = refused_events + ?, first_at_s = ?,"
    " last_at_s = ? WHERE gap_id = ?"
)
INSERT_GAP = (
    "INSERT INTO gaps (refused_events, first_at_s, last_at_s, reason, recorded_at_s)"
    " VALUES (?, ?, ?, ?, ?)"
)
MARK_GAP_REPORTED = "UPDATE gaps SET reported = 1 WHERE gap_id = ?"
SELECT_KV = "SELECT value FROM kv WHERE key = ?"
UPSERT_INBOUND_SEEN = (
    "INSERT INTO inbound_seen (mid, digest) VALUES (?, ?)"
    " ON CONFLICT (mid) DO UPDATE SET digest = excluded.digest"
)
SELECT_INBOUND_SEEN = (
    "SELECT mid, digest FROM inbound_seen WHERE mid IN (SELECT value FROM json_each(?))"
)
UPSERT_KV = (
    "INSERT INTO kv (key, value) VALUES (?, ?)"
    " ON CONFLICT (key) DO UPDATE SET value = excluded.value"
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
SELECT_COUNTERS = f"SELECT {', '.join(_COUNTER_FIELDS)} FROM counters WHERE one = 1"  # noqa: S608 - constant column list
_UPDATE_COUNTERS = (
    f"UPDATE counters SET {', '.join(f'{name} = ?' for name in _COUNTER_FIELDS)} WHERE one = 1"  # noqa: S608 - constant column list, values bound
)
_SELECT_CURSOR = "SELECT cursor FROM checkpoint WHERE one = 1"


# -- reading and writing rows --------------------------------------------------------------------


def load_counters(conn: sqlite3.Connection) -> Counters:
    """The counters row, read inside the caller's transaction."""
    return Counters(*conn.execute(SELECT_COUNTERS).fetchone())


def save_counters(conn: sqlite3.Connection, counters: Counters) -> None:
    """Write the counters row back, inside the transaction that changed the rows it counts."""
    conn.execute(_UPDATE_COUNTERS, [getattr(counters, name) for name in _COUNTER_FIELDS])


def load_cursor(conn: sqlite3.Connection) -> int:
    """The pipeline's cursor: the last journal id it has consumed."""
    return int(conn.execute(_SELECT_CURSOR).fetchone()[0])


def encode_event(journal_id: int, event: RawEvent) -> tuple[Any, ...]:
    """The `INSERT_JOURNAL` parameters for `event`; the last one is the row's `size_b`."""
    if isinstance(event, TagRead):
        size_b = (
            JOURNAL_ROW_OVERHEAD_B + len(event.reader) + len(event.station) + len(event.epc_hex)
        )
        return (
            journal_id,
            _KIND_TAG,
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
        _KIND_BARCODE,
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


def decode_event(row: tuple[Any, ...]) -> RawEvent:
    """The event in a `SELECT_JOURNAL` row."""
    _, kind, reader, station, at_s, data, antenna, rssi, count, channel, device = row
    if kind == _KIND_TAG:
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


def outbox_row_size_b(movement_id: str, payload: bytes) -> int:
    """An outbox row's share of the byte budget."""
    return OUTBOX_ROW_OVERHEAD_B + len(payload) + len(movement_id)


def decode_outbox_row(row: tuple[Any, ...]) -> OutboxRow:
    """The outbox row in a row selected with the outbox columns."""
    # Positional and without copying the payload (SQLite hands BLOBs over as bytes): the
    # forwarder decodes every row it publishes.
    return OutboxRow(row[0], row[1], row[2], row[3], bool(row[4]))


def decode_gap(row: tuple[Any, ...]) -> Gap:
    """The gap in a `SELECT_UNREPORTED_GAPS` row."""
    return Gap(int(row[0]), int(row[1]), float(row[2]), float(row[3]), str(row[4]))

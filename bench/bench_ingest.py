"""Journal ingest: `Buffer.append_raw` events/s against raw sqlite3 `executemany`, same run.

Both sides write the same events, in batches of the same size (500, like the journal loop under
load), to a table of the same shape (the buffer's own migration), with the same pragmas (WAL,
`synchronous=FULL`), one transaction per batch. The raw side gets its rows as ready-made tuples,
so the ratio also charges the buffer for turning domain events into rows and for its budget
bookkeeping. Runs alternate (raw, buffer, raw, buffer, ...) and the medians are reported. The raw
side sets the buffer's own writer pragmas, checkpoint settings included. Prints JSON.

    .venv/bin/python bench/bench_ingest.py           # 200,000 events, 3 rounds
    .venv/bin/python bench/bench_ingest.py --quick   # 20,000 events, 2 rounds

Goals: ratio >= 0.5 and buffer >= 30,000 events/s.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from gateway.buffer.files import BUSY_TIMEOUT_MS, CACHE_KIB, WAL_SIZE_LIMIT_B  # noqa: E402
from gateway.buffer.store import Buffer  # noqa: E402
from gateway.domain.events import BarcodeScan, RawEvent, TagRead  # noqa: E402
from gateway.logs import configure_logging  # noqa: E402

BUDGET_B = 8 * 1024**3
MIGRATION = ROOT / "gateway" / "buffer" / "migrations" / "0001_initial.sql"
INSERT = (
    "INSERT INTO journal (id, kind, reader, station, at_s, data, antenna, rssi, count, channel,"
    " device, size_b) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


def _events(count: int) -> list[RawEvent]:
    """Mostly tag reads from a portal, one barcode scan in fifty."""
    events: list[RawEvent] = []
    for i in range(count):
        at_s = 1_795_000_000.0 + i / 1000
        if i % 50 == 49:
            events.append(
                BarcodeScan(
                    reader="bench-scanner",
                    station="door-3",
                    data=f"]C1010614141123458221{i:08d}",
                    at_s=at_s,
                    device="hs-1",
                )
            )
        else:
            events.append(
                TagRead(
                    reader="door-3-portal",
                    station="door-3",
                    epc_hex=f"3074257BF7194E40{i % 5000:08X}",
                    antenna=1 + i % 4,
                    at_s=at_s,
                    rssi_dbm=-45.0 - (i % 30) / 2,
                    read_count=1,
                    channel=i % 50,
                )
            )
    return events


def _rows(events: list[RawEvent]) -> list[tuple[object, ...]]:
    rows: list[tuple[object, ...]] = []
    for i, e in enumerate(events, start=1):
        if isinstance(e, TagRead):
            size_b = 40 + len(e.reader) + len(e.station) + len(e.epc_hex)
            tag = (i, 0, e.reader, e.station, e.at_s, e.epc_hex, e.antenna, e.rssi_dbm)
            rows.append((*tag, e.read_count, e.channel, None, size_b))
        else:
            size_b = 40 + len(e.reader) + len(e.station) + len(e.data) + len(e.device or "")
            scan = (i, 1, e.reader, e.station, e.at_s, e.data, None, None)
            rows.append((*scan, None, None, e.device, size_b))
    return rows


def _raw(folder: Path, rows: list[tuple[object, ...]], batch: int) -> float:
    path = folder / "raw.sqlite3"
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        # The buffer's own writer pragmas, checkpoint settings included (files._prepare_writer).
        wal_limit_b = min(WAL_SIZE_LIMIT_B, max(64 * 1024, BUDGET_B // 4))
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = FULL")
        conn.execute(f"PRAGMA cache_size = -{CACHE_KIB}")
        conn.execute(f"PRAGMA journal_size_limit = {wal_limit_b}")
        conn.execute(f"PRAGMA wal_autocheckpoint = {max(16, wal_limit_b // 4096)}")
        conn.executescript(MIGRATION.read_text())
        started = time.perf_counter()
        for start in range(0, len(rows), batch):
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany(INSERT, rows[start : start + batch])
            conn.execute("COMMIT")
        return time.perf_counter() - started
    finally:
        conn.close()
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)


async def _buffer(folder: Path, events: list[RawEvent], batch: int) -> float:
    path = folder / "buffer.sqlite3"
    buffer = await Buffer.open(path, max_bytes=BUDGET_B, synchronous="FULL")
    try:
        started = time.perf_counter()
        for start in range(0, len(events), batch):
            await buffer.append_raw(events[start : start + batch])
        return time.perf_counter() - started
    finally:
        await buffer.close()
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)  # noqa: ASYNC240 - after timing


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="20,000 events, 3 rounds")
    parser.add_argument("--events", type=int, help="events per run")
    parser.add_argument("--batch", type=int, default=500, help="events per append_raw call")
    parser.add_argument("--rounds", type=int, help="alternating rounds")
    args = parser.parse_args()
    configure_logging("console", "WARNING")  # stdout carries only the JSON result
    count = args.events or (20_000 if args.quick else 200_000)
    rounds = args.rounds or 3
    events = _events(count)
    rows = _rows(events)
    raw_s: list[float] = []
    buffer_s: list[float] = []
    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as tmp:
        folder = Path(tmp)
        for _ in range(rounds):
            raw_s.append(_raw(folder, rows, args.batch))
            buffer_s.append(asyncio.run(_buffer(folder, events, args.batch)))
    raw_rate = count / statistics.median(raw_s)
    buffer_rate = count / statistics.median(buffer_s)
    ratio = buffer_rate / raw_rate
    note = (
        f"ingest: {count:,} events in batches of {args.batch}, one transaction each; "
        "Buffer.append_raw (domain events -> rows, ids and byte budget kept in the counters row, "
        "via its aiosqlite thread) vs sqlite3 executemany of ready-made tuples on the same "
        "schema with the same pragmas (WAL, synchronous=FULL, cache_size, journal_size_limit, "
        f"wal_autocheckpoint); medians of {rounds} alternated rounds"
    )
    print(
        json.dumps(
            {
                "events": count,
                "batch": args.batch,
                "rounds": rounds,
                "synchronous": "FULL",
                "raw_sqlite3_events_per_s": round(raw_rate),
                "buffer_append_raw_events_per_s": round(buffer_rate),
                "ratio": round(ratio, 3),
                "raw_runs_s": [round(s, 3) for s in raw_s],
                "buffer_runs_s": [round(s, 3) for s in buffer_s],
                "goals": {"ratio_ge": 0.5, "events_per_s_ge": 30_000},
                "ratio_ok": ratio >= 0.5,
                "rate_ok": buffer_rate >= 30_000,
                "results": [
                    {
                        "name": f"journal append_raw ({count:,} events, batch {args.batch})",
                        "value": round(buffer_rate),
                        "unit": "events/s",
                        "baseline": round(raw_rate),
                        "baseline_unit": "events/s raw sqlite3 executemany, same pragmas",
                        "ratio": round(ratio, 3),
                        "goal": ">= 0.5 of raw sqlite3 and >= 30,000/s",
                        "pass": ratio >= 0.5 and buffer_rate >= 30_000,
                        "note": note,
                    }
                ],
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()

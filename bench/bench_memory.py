"""Buffer with a big backlog: open time and peak RSS of a fresh process that opens it.

Fills a buffer with N outbox rows (~450-byte JSON payloads, all undelivered: the broker was down)
and M journal rows, then, in a fresh subprocess, measures `Buffer.open()` time and the peak RSS
(VmHWM, ru_maxrss beside it) of open + stats + reading every pending row in pages of 1,000.
A second subprocess times `PRAGMA quick_check` against `PRAGMA integrity_check` on the same
file. Prints JSON.

    .venv/bin/python bench/bench_memory.py            # 1,000,000 outbox + 1,000,000 journal rows
    .venv/bin/python bench/bench_memory.py --quick    # 20,000 + 20,000
    .venv/bin/python bench/bench_memory.py --keep DIR # keep (or reuse) the filled file in DIR

Goals: open < 2 s and peak RSS < 80 MB with 1,000,000 rows. Measured twice: warm (the file was
just written) and cold (the file dropped from the OS page cache with posix_fadvise first). Each
run also times `verify()`, the full page check that runs in the background on large files.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from gateway.buffer.store import Buffer  # noqa: E402
from gateway.domain.events import TagRead  # noqa: E402
from gateway.domain.movements import Evidence, Item, Movement  # noqa: E402
from gateway.domain.wire import render_movement_json  # noqa: E402

BUDGET = 8 * 1024**3
BATCH = 5000


def _payload(movement: Movement, seq: int) -> bytes:
    """The message the daemon would publish for it (about 450 bytes)."""
    return render_movement_json(movement, seq, "milan-returns", "dock-3")


def _movement(i: int) -> Movement:
    return Movement(
        id=f"{i:08x}-0000-5000-8000-{i:012x}",
        type="receipt",
        occurred_at_s=1_795_000_000.0 + i,
        station="door-3",
        item=Item(epc=f"urn:epc:id:sgtin:0614141.812345.{i}"),
        evidence=Evidence(source="rfid", reader="door-3-portal", first_seen_s=0.0, last_seen_s=0.0),
    )


async def _fill(path: Path, outbox_rows: int, journal_rows: int) -> None:
    buffer = await Buffer.open(path, max_bytes=BUDGET, synchronous="NORMAL")
    try:
        stats = await buffer.stats()
        done_journal = stats.journal_last_id
        while done_journal < journal_rows:
            n = min(BATCH, journal_rows - done_journal)
            events = [
                TagRead(
                    reader="door-3-portal",
                    station="door-3",
                    epc_hex=f"3074257BF7194E40{done_journal + k:08X}",
                    antenna=1 + k % 4,
                    at_s=1_795_000_000.0 + (done_journal + k) / 100,
                    rssi_dbm=-50.5,
                )
                for k in range(n)
            ]
            done_journal = await buffer.append_raw(events)
        done_outbox = stats.last_seq
        while done_outbox < outbox_rows:
            n = min(BATCH, outbox_rows - done_outbox)
            movements = [_movement(done_outbox + k) for k in range(n)]
            seqs = await buffer.commit_pipeline(
                movements, cursor=done_journal, state=b"{}", render=_payload
            )
            done_outbox = seqs[-1]
    finally:
        await buffer.close()


def _vm_hwm_kib() -> int:
    """Peak RSS of this process image (VmHWM); ru_maxrss can carry the parent's peak over exec."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _evict_from_page_cache(path: Path) -> None:
    """Drop this file (only) from the OS page cache, to time a cold start."""
    for suffix in ("", "-wal"):
        target = Path(f"{path}{suffix}")
        if target.exists():
            fd = os.open(target, os.O_RDONLY)
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


async def _measure(path: Path, *, cold: bool) -> dict[str, object]:
    if cold:
        _evict_from_page_cache(path)
    rss_before_kib = _vm_hwm_kib()
    started = time.perf_counter()
    buffer = await Buffer.open(path, max_bytes=BUDGET)
    open_s = time.perf_counter() - started
    try:
        started = time.perf_counter()
        stats = await buffer.stats()
        stats_s = time.perf_counter() - started
        started = time.perf_counter()
        after, read = 0, 0
        while True:
            rows = await buffer.pending(after, 1000)
            if not rows:
                break
            read += len(rows)
            after = rows[-1].seq
        read_s = time.perf_counter() - started
        started = time.perf_counter()
        verify = await buffer.verify()
        verify_s = time.perf_counter() - started
    finally:
        await buffer.close()
    rss_kib = _vm_hwm_kib()
    maxrss_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    prefix = "cold_" if cold else ""
    return {
        f"{prefix}open_s": round(open_s, 3),
        f"{prefix}verify_s": round(verify_s, 2),
        "verify_result": verify or "ok",
        "stats_s": round(stats_s, 4),
        "pending_read_all_s": round(read_s, 2),
        "pending_rows_read": read,
        "outbox_rows": stats.outbox_rows,
        "journal_rows": stats.journal_rows,
        "file_bytes": stats.file_bytes,
        "used_bytes": stats.used_bytes,
        f"{prefix}rss_after_imports_mb": round(rss_before_kib / 1024, 1),
        f"{prefix}peak_rss_mb": round(rss_kib / 1024, 1),
        f"{prefix}ru_maxrss_mb": round(maxrss_kib / 1024, 1),
    }


def _check_timings(path: Path) -> dict[str, float]:
    out: dict[str, float] = {}
    conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    try:
        for pragma in ("quick_check", "integrity_check"):
            started = time.perf_counter()
            conn.execute(f"PRAGMA {pragma}").fetchall()
            out[f"{pragma}_s"] = round(time.perf_counter() - started, 3)
    finally:
        conn.close()
    return out


def _subprocess_json(*args: str) -> dict[str, object]:
    done = subprocess.run(
        [sys.executable, __file__, *args], check=True, capture_output=True, text=True
    )
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="20,000 rows instead of 1,000,000")
    parser.add_argument("--keep", type=Path, help="folder to keep (or reuse) the filled buffer in")
    parser.add_argument("--measure", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--check", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--cold", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(asyncio.run(_measure(args.measure, cold=args.cold))))
        return
    if args.check:
        print(json.dumps(_check_timings(args.check)))
        return
    rows = 20_000 if args.quick else 1_000_000
    with tempfile.TemporaryDirectory(prefix="bench-memory-") as tmp:
        folder = args.keep or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / "buffer.sqlite3"
        started = time.perf_counter()
        asyncio.run(_fill(path, rows, rows))
        fill_s = time.perf_counter() - started
        measured = _subprocess_json("--measure", str(path))
        cold = _subprocess_json("--measure", str(path), "--cold")
        checks = _subprocess_json("--check", str(path))
    result = {
        "rows": rows,
        "fill_s": round(fill_s, 1),
        **measured,
        **{k: v for k, v in cold.items() if k.startswith("cold_")},
        **checks,
        "goals": {"open_s_lt": 2.0, "peak_rss_mb_lt": 80.0},
        "open_ok": max(float(str(measured["open_s"])), float(str(cold["cold_open_s"]))) < 2.0,
        "rss_ok": max(float(str(measured["peak_rss_mb"])), float(str(cold["cold_peak_rss_mb"])))
        < 80.0,
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

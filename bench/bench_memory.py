"""The daemon with a big backlog: its start-up to the first published movement and its RSS.

Fills a real buffer (through `Buffer`) with N undelivered movements (~450-byte JSON: the broker
was away), then starts `gateway run` on a copy of it with a private mosquitto up and a subscriber
listening, and measures from outside:
- start-up: from spawning the process to the first movement arriving at the subscriber
  (interpreter start, imports, buffer open with its quick check, broker connect, first publish);
- RSS: the daemon's VmRSS sampled every 100 ms and its VmHWM (peak) from /proc, over the start
  and `--watch-s` seconds of draining the backlog, which covers the full integrity check the
  daemon runs in the background after start;
- the full check apart: `PRAGMA quick_check` (what that background check runs) and
  `PRAGMA integrity_check` timed on the same file in this process.
Twice: warm (file just written) and cold (file dropped from the page cache first); the worse of
the two is the figure. Prints one JSON object with `results` rows for run_all.

    .venv/bin/python bench/bench_memory.py [--quick] [--rows N] [--keep DIR] [--watch-s S]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sqlite3
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
if str(BENCH) not in sys.path:
    sys.path.insert(0, str(BENCH))

import paho.mqtt.client as paho  # noqa: E402
from daemon_harness import (  # noqa: E402
    BUFFER_FILE,
    MOVEMENTS_TOPIC,
    ChildProcess,
    DaemonProcess,
    fill_backlog,
    memory_kib,
    pending,
    write_config,
)
from paho.mqtt.enums import CallbackAPIVersion  # noqa: E402

from gateway.buffer.files import CACHE_KIB  # noqa: E402
from gateway.logs import configure_logging  # noqa: E402
from tests.support.broker import Mosquitto  # noqa: E402

RSS_GOAL_MB = 80.0
START_GOAL_S = 2.0


class FirstMessage:
    """A subscriber that notes when the first movement arrives."""

    def __init__(self, port: int) -> None:
        self.arrived = threading.Event()
        self.at_mono = 0.0
        self.count = 0
        self._subscribed = threading.Event()
        self.client = paho.Client(CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
        self.client.on_connect = lambda c, *_a: c.subscribe(MOVEMENTS_TOPIC, 0)
        self.client.on_subscribe = lambda *_a: self._subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        if not self._subscribed.wait(10):
            raise RuntimeError("subscriber could not subscribe")

    def _on_message(self, *_args: object) -> None:
        if not self.arrived.is_set():
            self.at_mono = time.monotonic()
            self.arrived.set()
        self.count += 1

    def close(self) -> None:
        """Disconnect."""
        self.client.disconnect()
        self.client.loop_stop()


def raw_drainer(db: Path, port: int, log: Path) -> ChildProcess:
    """bench/raw_drainer.py as a subprocess: bare sqlite3 + paho draining the same file."""
    command = [
        sys.executable, str(BENCH / "raw_drainer.py"), "--db", str(db), "--port", str(port),
        "--topic", MOVEMENTS_TOPIC, "--window", "100", "--cache-kib", str(CACHE_KIB),
    ]  # fmt: skip
    return ChildProcess(command, log)


def run_side(
    template: Path, workdir: Path, watch_s: float, *, cold: bool, raw: bool
) -> dict[str, Any]:
    """One start of the daemon (or, with `raw`, the raw drainer) on a copy of the backlog."""
    if workdir.exists():
        shutil.rmtree(workdir)
    (workdir / "state").mkdir(parents=True)
    copy = workdir / "state" / BUFFER_FILE
    shutil.copy(template, copy)
    if cold:
        _evict_from_page_cache(copy)
    what = "raw drainer" if raw else "daemon"
    with Mosquitto(workdir / "broker") as broker:
        listener = FirstMessage(broker.port)
        try:
            config = write_config(workdir, broker.port)
            before = pending(workdir / "state")
            process = (
                raw_drainer(copy, broker.port, workdir / "raw.log")
                if raw
                else DaemonProcess(config, workdir / "daemon.log")
            )
            with process:
                peak_rss = 0
                deadline = process.started_mono + watch_s
                while time.monotonic() < deadline:
                    if not process.alive():
                        raise RuntimeError(f"the {what} exited; see {process.log}")
                    rss, hwm = memory_kib(process.pid)
                    peak_rss = max(peak_rss, rss)
                    time.sleep(0.1)
                if not listener.arrived.is_set():
                    raise RuntimeError(f"{what}: no movement published in {watch_s} s")
                _rss, hwm = memory_kib(process.pid)
                startup_s = listener.at_mono - process.started_mono
            after = pending(workdir / "state") if not raw else None
        finally:
            listener.close()
    return {
        "startup_to_first_movement_s": round(startup_s, 3),
        "peak_rss_mb": round(max(hwm, peak_rss) / 1024, 1),
        "pending_at_start": before,
        "pending_after_watch": after,
        "published_in_watch": listener.count,
        "corrupt_logged": "buffer_corrupt" in process.log.read_text(),
    }


def check_timings(path: Path) -> dict[str, float]:
    """The full checks, timed on their own read-only connection."""
    out: dict[str, float] = {}
    conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    try:
        for pragma in ("quick_check", "integrity_check"):
            started = time.perf_counter()
            conn.execute(f"PRAGMA {pragma}").fetchall()
            out[f"{pragma}_s"] = round(time.perf_counter() - started, 2)
    finally:
        conn.close()
    return out


def _evict_from_page_cache(path: Path) -> None:
    """Drop this file (only) from the OS page cache, to time a cold start."""
    for suffix in ("", "-wal"):
        target = Path(f"{path}{suffix}")
        if target.exists():
            fd = os.open(target, os.O_RDONLY)
            try:
                os.fdatasync(fd)
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


def main() -> int:
    """Run the benchmark and print one JSON object."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="50,000 rows instead of 1,000,000")
    parser.add_argument("--rows", type=int, default=None)
    parser.add_argument("--watch-s", type=float, default=20.0)
    parser.add_argument("--keep", type=Path, help="folder to keep (or reuse) the filled buffer in")
    args = parser.parse_args()
    configure_logging("console", "WARNING")  # stdout carries only the JSON result
    rows = args.rows or (50_000 if args.quick else 1_000_000)
    with tempfile.TemporaryDirectory(prefix="bench-memory-") as tmp:
        folder = args.keep or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        template = folder / f"backlog-{rows}.sqlite3"
        started = time.perf_counter()
        if not template.exists():
            asyncio.run(fill_backlog(template, rows))
        fill_s = time.perf_counter() - started
        checks = check_timings(template)
        # Alternated: raw, daemon (warm page cache), raw, daemon (cold).
        raw_warm = run_side(template, Path(tmp) / "rw", args.watch_s, cold=False, raw=True)
        warm = run_side(template, Path(tmp) / "warm", args.watch_s, cold=False, raw=False)
        raw_cold = run_side(template, Path(tmp) / "rc", args.watch_s, cold=True, raw=True)
        cold = run_side(template, Path(tmp) / "cold", args.watch_s, cold=True, raw=False)
        file_mb = template.stat().st_size / 1e6
    rss = max(warm["peak_rss_mb"], cold["peak_rss_mb"])
    start = max(warm["startup_to_first_movement_s"], cold["startup_to_first_movement_s"])
    raw_rss = max(raw_warm["peak_rss_mb"], raw_cold["peak_rss_mb"])
    raw_start = max(
        raw_warm["startup_to_first_movement_s"], raw_cold["startup_to_first_movement_s"]
    )
    covered = args.watch_s > checks["quick_check_s"] + 3.0
    results = [
        {
            "name": f"daemon peak RSS with {rows:,} undelivered movements",
            "value": rss,
            "unit": "MB",
            "baseline": raw_rss,
            "baseline_unit": "MB bare sqlite3 + paho drainer, same file",
            "ratio": round(rss / raw_rss, 3) if raw_rss else None,
            "goal": f"< {RSS_GOAL_MB:.0f} MB",
            "pass": rss < RSS_GOAL_MB,
            "note": (
                f"RSS: the daemon process's VmHWM and VmRSS (sampled every 100 ms) from spawn "
                f"through {args.watch_s:.0f} s of draining, warm and cold page cache, the worse "
                f"(warm {warm['peak_rss_mb']} MB, cold {cold['peak_rss_mb']} MB; "
                f"{warm['published_in_watch']:,} movements published in the warm run); the "
                f"background full check ({checks['quick_check_s']} s alone) "
                f"{'ran inside this window' if covered else 'may outlast this window'}. "
                f"Baseline: bench/raw_drainer.py (sqlite3 with the buffer's pragmas and page "
                f"cache, pages of 500 pending rows in seq order, paho QoS 1, window 100 refilled "
                f"from on_publish, every 500 PUBACKs marked delivered in one transaction), "
                f"measured the same way on a fresh copy of the same file, run before each daemon "
                f"run (warm {raw_warm['peak_rss_mb']} MB, cold {raw_cold['peak_rss_mb']} MB; "
                f"{raw_warm['published_in_watch']:,} published in the warm run)"
            ),
        },
        {
            "name": f"start-up to the first published movement, {rows:,} undelivered",
            "value": start,
            "unit": "s",
            "baseline": raw_start,
            "baseline_unit": "s bare sqlite3 + paho drainer, same file",
            "ratio": round(start / raw_start, 3) if raw_start else None,
            "goal": f"< {START_GOAL_S:.0f} s",
            "pass": start < START_GOAL_S,
            "note": (
                "start-up: from spawning `gateway run` to the first movement at a subscriber "
                "(imports, buffer open with its quick check of the small tables, broker "
                f"connect, first publish); warm {warm['startup_to_first_movement_s']} s, cold "
                f"{cold['startup_to_first_movement_s']} s; the full check runs after start, in "
                f"the background: quick_check {checks['quick_check_s']} s, integrity_check "
                f"{checks['integrity_check_s']} s on this {file_mb:,.0f} MB file. Baseline: the "
                f"raw drainer from spawn to its first movement at the subscriber (interpreter, "
                f"sqlite3 and paho imports, open, connect, first page, publish); warm "
                f"{raw_warm['startup_to_first_movement_s']} s, cold "
                f"{raw_cold['startup_to_first_movement_s']} s"
            ),
        },
    ]
    print(
        json.dumps(
            {
                "rows": rows,
                "fill_s": round(fill_s, 1),
                "file_mb": round(file_mb),
                **checks,
                "warm": warm,
                "cold": cold,
                "raw_warm": raw_warm,
                "raw_cold": raw_cold,
                "results": results,
            },
            indent=1,
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Expected returns under SIGKILL: receipts and their RMA lines together, announcements cut short.

Sizes: 1,200 announced scans (600 RMAs of two items) at 150/s with 8 kills after 0.4-1.5 s of
uptime (seed 11); 24,000 RMAs announced in 12 messages of 2,000 with a kill after the first reply.
"""

from __future__ import annotations

import csv
import json
import random
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.support.broker import Mosquitto
from tests.support.daemon import ROOT, DaemonProcess, wait_until, write_config
from tests.support.scans import gtin14, scan_events, write_jsonl
from tests.support.wms import Collector, publish, retained

pytestmark = pytest.mark.slow

SITE = "milan-returns"
BASE = f"returns/{SITE}/dock-3"
SCANS = 1_200
KILLS = 8
BATCHES = 12
BATCH_RMAS = 2_000


def _gtin_serial(index: int) -> tuple[str, str]:
    """The GTIN and serial that `item_scan(index)` encodes."""
    return gtin14("0614141" + str(10000 + index % 90000)[:5]), f"{index:08d}"


def _write_csv(path: Path, rows: list[tuple[str, int]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as out:
        writer = csv.writer(out)
        writer.writerow(["rma", "customer", "epc", "gtin", "serial", "qty", "expires_at"])
        for rma, index in rows:
            gtin, serial = _gtin_serial(index)
            writer.writerow([rma, "C-1", "", gtin, serial, 1, ""])
    return path


def _import(config: Path, csv_path: Path) -> dict[str, Any]:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "gateway",
            "expected",
            "import",
            str(csv_path),
            "--config",
            str(config),
        ],
        capture_output=True,
        check=False,
        cwd=ROOT,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr.decode(errors="replace")[-2000:]
    result: dict[str, Any] = json.loads(out.stdout)
    return result


def _config(tmp_path: Path, broker: Mosquitto, replay: Path | None, rate_per_s: float) -> Path:
    readers = []
    if replay is not None:
        readers.append(
            {
                "kind": "replay",
                "id": "replay-1",
                "station": "door-3",
                "file": str(replay),
                "rate_per_s": rate_per_s,
            }
        )
    return write_config(
        tmp_path / "gateway.toml",
        broker_port=broker.port,
        state_dir=tmp_path / "state",
        stations=[{"id": "door-3", "kind": "receiving"}],
        readers=readers,
        mqtt={"max_inflight": 20},
    )


def test_a_receipt_and_its_rma_line_survive_sigkill_together(tmp_path: Path) -> None:
    broker = Mosquitto(tmp_path / "mosquitto")
    broker.start()
    collector = Collector(broker.port, [f"{BASE}/movements"])
    collector.start()
    replay = write_jsonl(tmp_path / "events.jsonl", scan_events(SCANS))
    config = _config(tmp_path, broker, replay, 150)
    announced = _import(
        config, _write_csv(tmp_path / "rmas.csv", [(f"RMA-{i // 2:05d}", i) for i in range(SCANS)])
    )
    assert (announced["accepted"], announced["open"]) == (SCANS // 2, SCANS // 2)
    daemon = DaemonProcess(config, tmp_path / "daemon.log")
    rng = random.Random(11)
    try:
        daemon.start()
        for _ in range(KILLS):
            time.sleep(rng.uniform(0.4, 1.5))
            assert daemon.alive(), "the daemon died on its own"
            daemon.kill()
            daemon.start()
        daemon.wait_for_log("replay_finished", timeout_s=60)
        collector.wait_for(
            lambda c: len(c.distinct_ids()) >= SCANS + SCANS // 2, 90, "receipts and completions"
        )
        time.sleep(0.5)
        assert daemon.terminate() == 0
    finally:
        if daemon.alive():
            daemon.kill()
        collector.stop()
        broker.stop()

    bodies = {m.json()["id"]: m.json() for m in collector.received()}
    receipts = [b for b in bodies.values() if b["type"] == "receipt"]
    completes = [b for b in bodies.values() if b["type"] == "rma-complete"]
    assert len(receipts) == SCANS
    wrong = [
        b
        for b in receipts
        if b["rma"] != f"RMA-{int(b['item']['serial']) // 2:05d}"
        or b["expected"] is not True
        or b.get("flags")
    ]
    assert not wrong, f"receipts not matched once and cleanly: {wrong[:3]}"
    assert sorted(b["rma"] for b in completes) == [f"RMA-{i:05d}" for i in range(SCANS // 2)]
    with sqlite3.connect(tmp_path / "state" / "buffer.sqlite3") as db:
        lines = db.execute("SELECT min(received), max(received), count(*) FROM expected_lines")
        assert lines.fetchone() == (1, 1, SCANS), "a line counted twice or not at all"
        times = db.execute("SELECT min(times), max(times), count(*) FROM expected_received")
        assert times.fetchone() == (1, 1, SCANS)
        counters = db.execute("SELECT open_rmas, open_lines FROM expected_counters").fetchone()
        assert counters == (0, 0)


def test_restart_in_the_middle_of_a_large_announcement_loses_and_doubles_nothing(
    tmp_path: Path,
) -> None:
    broker = Mosquitto(tmp_path / "mosquitto")
    broker.start()
    keep = 999_999
    replay = write_jsonl(tmp_path / "events.jsonl", scan_events(1, start=keep))
    config = _config(tmp_path, broker, replay, 100)
    _import(config, _write_csv(tmp_path / "keep.csv", [("RMA-KEEP", keep), ("RMA-KEEP", keep + 1)]))
    results = Collector(broker.port, [f"{BASE}/cmd-result/expected-returns", f"{BASE}/movements"])
    results.start()
    daemon = DaemonProcess(config, tmp_path / "daemon.log")
    batches = [
        json.dumps(
            {
                "action": "add",
                "rmas": [
                    {"rma": f"BIG-{b}-{i}", "items": [{"epc": f"urn:epc:id:sgtin:1.2.{b}{i:05d}"}]}
                    for i in range(BATCH_RMAS)
                ],
            }
        ).encode()
        for b in range(BATCHES)
    ]
    try:
        daemon.start()
        results.wait_for(lambda c: len(c.received()) >= 1, 30, "the receipt of RMA-KEEP")
        wait_until(lambda: _online(broker), 30, "gateway online")
        for payload in batches:
            publish(broker.port, f"{BASE}/cmd/expected-returns", payload)
        results.wait_for(lambda c: len(c.received("/expected-returns")) >= 1, 60, "a first reply")
        daemon.kill()
        first_run = len(results.received("/expected-returns"))
        assert first_run < BATCHES, "the kill came too late to cut the announcement"
        daemon.start()
        wait_until(lambda: _online(broker), 30, "gateway online again")
        for payload in batches:  # the WMS sends again what got no reply
            publish(broker.port, f"{BASE}/cmd/expected-returns", payload)
        results.wait_for(
            lambda c: len(c.received("/expected-returns")) >= first_run + BATCHES,
            120,
            "a reply to every batch",
        )
        assert daemon.terminate() == 0
    finally:
        if daemon.alive():
            daemon.kill()
        results.stop()
        broker.stop()

    replies = [m.json() for m in results.received("/expected-returns")][first_run:]
    assert all(r["ok"] and r["accepted"] == BATCH_RMAS and not r["refused"] for r in replies)
    stats = subprocess.run(
        [sys.executable, "-m", "gateway", "expected", "stats", "--config", str(config)],
        capture_output=True,
        check=True,
        cwd=ROOT,
        timeout=60,
    )
    counts = json.loads(stats.stdout)
    assert counts["rmas"] == 1 + BATCHES * BATCH_RMAS, "an RMA lost or doubled"
    assert counts["lines"] == 2 + BATCHES * BATCH_RMAS
    with sqlite3.connect(tmp_path / "state" / "buffer.sqlite3") as db:
        kept = db.execute(
            "SELECT l.received FROM expected_lines l JOIN expected_rmas r ON r.id = l.rma_id"
            " WHERE r.rma = 'RMA-KEEP' ORDER BY l.line"
        ).fetchall()
    assert kept == [(1,), (0,)], "what arrived before the announcement is kept"


def _online(broker: Mosquitto) -> bool:
    payload = retained(broker.port, f"{BASE}/status", timeout_s=1.0)
    return payload is not None and json.loads(payload).get("state") == "online"

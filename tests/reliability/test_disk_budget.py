"""A long outage with a steady input stream against a small byte budget.

Sizes: 256 KiB budget, 6,000 scans at 400/s (15 s of steady input) with the broker down the whole
time; the file (main + WAL) is sampled every 0.25 s during the outage.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.support.broker import Mosquitto
from tests.support.daemon import DaemonProcess, buffer_stats, wait_until, write_config
from tests.support.scans import scan_events, write_jsonl
from tests.support.wms import Collector

pytestmark = pytest.mark.slow

BASE = "returns/milan-returns/dock-3"
BUFFER_FILE = "buffer.sqlite3"
BUDGET_BYTES = 256 * 1024
SCANS = 6_000
RATE_PER_S = 400
# SQLite needs slack beyond the budget: the main file keeps free pages (measured: 2.1x here).
MAIN_BOUND_BYTES = 4 * BUDGET_BYTES
# The WAL checkpoints at a quarter of the budget (64 KiB at least) and is truncated to that, so
# it stays near it; one transaction in flight may overshoot by its own size.
WAL_BOUND_BYTES = 2 * max(64 * 1024, BUDGET_BYTES // 4) + 64 * 1024


def _sizes(state: Path) -> tuple[int, int]:
    main, wal = state / BUFFER_FILE, state / (BUFFER_FILE + "-wal")
    return (main.stat().st_size if main.exists() else 0, wal.stat().st_size if wal.exists() else 0)


def test_long_outage_keeps_movements_drops_raw_reports_gap_and_drains(tmp_path: Path) -> None:
    broker = Mosquitto(tmp_path / "mosquitto")
    broker.start()
    collector = Collector(broker.port, [f"{BASE}/movements"])
    collector.prime()
    broker.stop()
    state = tmp_path / "state"
    replay = write_jsonl(tmp_path / "events.jsonl", scan_events(SCANS))
    config = write_config(
        tmp_path / "gateway.toml",
        broker_port=broker.port,
        state_dir=state,
        stations=[{"id": "door-3", "kind": "receiving"}],
        readers=[
            {
                "kind": "replay",
                "id": "replay-1",
                "station": "door-3",
                "file": str(replay),
                "rate_per_s": RATE_PER_S,
            }
        ],
        buffer={"max_bytes": BUDGET_BYTES},
    )
    with DaemonProcess(config, tmp_path / "daemon.log") as daemon:
        sizes: list[tuple[int, int]] = []
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            sizes.append(_sizes(state))
            if any(e.get("event") == "replay_finished" for e in daemon.log_events()):
                break
            assert daemon.alive(), "the daemon died during the outage"
            time.sleep(0.25)
        else:
            pytest.fail("the replay did not finish within 90 s")
        sizes.append(_sizes(state))
        main_max = max(main for main, _ in sizes)
        wal_max = max(wal for _, wal in sizes)
        assert main_max <= MAIN_BOUND_BYTES, f"main file grew to {main_max} B on a 256 KiB budget"
        assert wal_max <= WAL_BOUND_BYTES, f"WAL grew to {wal_max} B"
        daemon.wait_for_log("input_refused_buffer_full")

        wait_until(
            lambda: (
                buffer_stats(config)["journal_last_id"]
                + buffer_stats(config)["refused_events_total"]
                >= SCANS
            ),
            30,
            "every scan journaled or refused",
        )
        stats = buffer_stats(config)
        assert stats["refused_events_total"] > 0, "the budget must have been hit"
        assert stats["gaps_total"] >= 1
        assert stats["journal_rows"] < stats["journal_last_id"], "raw reads must go first"
        made = stats["last_seq"]
        assert stats["pending"] == made, "no movement may leave the outbox during the outage"

        broker.start()
        with collector:
            collector.wait_for(lambda c: len(c.distinct_ids()) >= made, 90, "every movement")
            wait_until(lambda: buffer_stats(config)["pending"] == 0, 60, "outbox drained")
            messages = [m.json() for m in collector.received()]
        assert daemon.terminate() == 0
    broker.stop()

    by_id = {m["id"]: m for m in messages}
    assert len(by_id) == made
    assert sorted(m["seq"] for m in by_id.values()) == list(range(1, made + 1))
    gaps = [m for m in by_id.values() if m["type"] == "gap"]
    receipts = [m for m in by_id.values() if m["type"] == "receipt"]
    assert gaps, "a gap movement must be published"
    refused = sum(int(g["detail"]["refused_events"]) for g in gaps)
    assert refused == stats["refused_events_total"]
    assert len(receipts) + len(gaps) == made
    serials = {m["item"]["serial"] for m in receipts}
    assert len(serials) == len(receipts), "one receipt per item"
    assert serials <= {f"{i:08d}" for i in range(SCANS)}
    assert len(receipts) + refused == SCANS, "every scan is a movement or counted in a gap"

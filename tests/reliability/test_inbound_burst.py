"""A WMS burst from outside the daemon: nothing the broker counted as delivered is lost or doubled.

Sizes: 1,500 site-wide announcements of 100 RMAs each and 2,000 MQTT scans of distinct items
(four handhelds), all at QoS 1, published by one client with no in-flight limit and without
waiting, interleaved (seed 20). The daemon runs as `gateway run` against a real mosquitto whose
queues are unbounded; its Receive Maximum (32) bounds what it holds. Once straight through (every
announcement answered, every scan a movement, peak RSS under 120 MB), once with a SIGKILL when
a fifth of the scans were movements, and a restart.
"""

from __future__ import annotations

import json
import random
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from tests.support.broker import Mosquitto
from tests.support.daemon import DaemonProcess, run_gateway, wait_until, write_config
from tests.support.scans import item_scan
from tests.support.wms import Collector, retained

pytestmark = pytest.mark.slow

SITE = "milan-returns"
BASE = f"returns/{SITE}/dock-3"
ANNOUNCEMENTS = 1_500
RMAS_EACH = 100
SCANS = 2_000
HANDHELDS = 4
PEAK_RSS_MAX_B = 120 * 1024 * 1024


def test_a_burst_is_answered_and_journaled_whole_in_bounded_memory(tmp_path: Path) -> None:
    broker, collector, daemon, config = _start(tmp_path)
    try:
        started = time.monotonic()
        published_s = _publish_burst(broker.port)
        collector.wait_for(lambda c: len(_replies(c)) >= ANNOUNCEMENTS, 240, "every reply")
        answered_s = time.monotonic() - started
        collector.wait_for(lambda c: len(c.distinct_ids()) >= SCANS, 120, "every movement")
        moved_s = time.monotonic() - started
        assert daemon.proc is not None
        peak_b = _peak_rss_b(daemon.proc.pid)
        assert daemon.terminate() == 0
    finally:
        _stop(broker, collector, daemon)

    replies = _replies(collector)
    figures = {
        "published_s": round(published_s, 1),
        "answered": len(replies),
        "answered_s": round(answered_s, 1),
        "movements": len(collector.distinct_ids()),
        "movements_s": round(moved_s, 1),
        "peak_rss_mb": round(peak_b / 2**20, 1),
    }
    print("inbound burst:", json.dumps(figures))  # the README's figures come from this line
    assert len(replies) == ANNOUNCEMENTS, "an announcement answered twice"
    assert all(r["ok"] and r["accepted"] == RMAS_EACH and not r["refused"] for r in replies)
    _assert_every_scan_once(collector, tmp_path)
    _assert_every_rma_open(config)
    assert peak_b < PEAK_RSS_MAX_B, f"peak RSS {peak_b / 2**20:.0f} MB"
    dropped = [e for e in daemon.log_events() if e.get("event") == "incoming_message_dropped"]
    assert not dropped


def test_a_burst_cut_by_sigkill_is_finished_after_the_restart(tmp_path: Path) -> None:
    broker, collector, daemon, config = _start(tmp_path)
    try:
        started = time.monotonic()
        _publish_burst(broker.port)
        # One second in, as the run: both announcements and scans are coming in.
        time.sleep(max(0.0, started + 1.0 - time.monotonic()))
        daemon.kill()
        killed_after = len(_replies(collector)), len(collector.distinct_ids())
        daemon.start()
        # The second run must be up (SIGTERM before its handlers exist kills it: exit -15).
        daemon.wait_for_log("gateway_started", timeout_s=60, count=2)
        wait_until(lambda: _journaled(tmp_path) >= SCANS, 240, "every scan journaled")
        collector.wait_for(lambda c: len(c.distinct_ids()) >= SCANS, 120, "every movement")
        wait_until(lambda: _rmas(config) >= ANNOUNCEMENTS * RMAS_EACH, 240, "every RMA")
        print(
            "inbound burst with SIGKILL:",
            json.dumps(
                {
                    "killed_after_replies_movements": killed_after,
                    "done_s": round(time.monotonic() - started, 1),
                    "redeliveries_skipped": _logged(daemon, "redelivery_skipped"),
                    "connections": _logged(daemon, "broker_connected"),
                }
            ),
        )
        assert daemon.terminate() == 0
    finally:
        _stop(broker, collector, daemon)

    assert killed_after[0] < ANNOUNCEMENTS, "the kill came too late to cut the announcements"
    assert killed_after[1] < SCANS, "the kill came too late to cut the scans"
    _assert_every_scan_once(collector, tmp_path)
    _assert_every_rma_open(config)


# -- helpers ---------------------------------------------------------------------------------


def _start(tmp_path: Path) -> tuple[Mosquitto, Collector, DaemonProcess, Path]:
    broker = Mosquitto(tmp_path / "mosquitto")
    broker.start()
    config = write_config(
        tmp_path / "gateway.toml",
        broker_port=broker.port,
        state_dir=tmp_path / "state",
        stations=[{"id": "door-3", "kind": "receiving"}],
        readers=[{"kind": "mqtt-scanner", "id": "handhelds", "station": "door-3"}],
    )
    collector = Collector(broker.port, [f"{BASE}/cmd-result/expected-returns", f"{BASE}/movements"])
    collector.start()
    daemon = DaemonProcess(config, tmp_path / "daemon.log")
    daemon.start()
    # The daemon's persistent session and its subscriptions exist before the WMS sends.
    wait_until(lambda: _online(broker), 30, "gateway online")
    return broker, collector, daemon, config


def _stop(broker: Mosquitto, collector: Collector, daemon: DaemonProcess) -> None:
    if daemon.alive():
        daemon.kill()
    collector.stop()
    broker.stop()


def _burst() -> list[tuple[str, bytes]]:
    announcements = [
        (
            f"returns/{SITE}/expected-returns",
            json.dumps(
                {
                    "action": "add",
                    "rmas": [
                        {
                            "rma": f"RMA-{m:04d}-{i:03d}",
                            "items": [{"epc": f"urn:epc:id:sgtin:0614141.812345.{m}{i:03d}"}],
                        }
                        for i in range(RMAS_EACH)
                    ],
                }
            ).encode(),
        )
        for m in range(ANNOUNCEMENTS)
    ]
    scans = [(f"{BASE}/scans/hh-{i % HANDHELDS}", item_scan(i).encode()) for i in range(SCANS)]
    burst = announcements + scans
    random.Random(20).shuffle(burst)
    return burst


def _publish_burst(port: int) -> float:
    """Publish the whole burst at QoS 1 without waiting between messages; seconds to PUBACKs."""
    burst = _burst()
    acked = threading.Semaphore(0)
    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    client.max_inflight_messages_set(0)  # no limit: the broker gets it all at once
    client.max_queued_messages_set(0)
    client.on_publish = lambda *_: acked.release()
    client.connect("127.0.0.1", port)
    client.loop_start()
    started = time.monotonic()
    try:
        for topic, payload in burst:
            client.publish(topic, payload, qos=1)
        for _ in burst:
            assert acked.acquire(timeout=120), "the broker did not take the burst"
    finally:
        client.disconnect()
        client.loop_stop()
    return time.monotonic() - started


def _replies(collector: Collector) -> list[dict[str, Any]]:
    return [m.json() for m in collector.received("/cmd-result/expected-returns")]


def _assert_every_scan_once(collector: Collector, tmp_path: Path) -> None:
    bodies = {m.json()["id"]: m.json() for m in collector.received()}
    serials = sorted(int(b["item"]["serial"]) for b in bodies.values())
    assert serials == list(range(SCANS)), "a scan lost, or made two movements"
    with sqlite3.connect(f"file:{tmp_path / 'state' / 'buffer.sqlite3'}?mode=ro", uri=True) as db:
        journal = db.execute("SELECT count(*), count(DISTINCT data) FROM journal").fetchone()
        outbox = db.execute("SELECT count(*) FROM outbox").fetchone()[0]
    assert journal == (SCANS, SCANS), "a redelivered scan was journaled again"
    assert outbox == SCANS


def _assert_every_rma_open(config: Path) -> None:
    counts = _expected_stats(config)
    total = ANNOUNCEMENTS * RMAS_EACH
    assert (counts["rmas"], counts["open_rmas"], counts["lines"]) == (total, total, total)


def _expected_stats(config: Path) -> dict[str, int]:
    out = run_gateway("expected", "stats", "--config", str(config), timeout_s=60)
    assert out.returncode == 0, out.stderr[-2000:]
    stats: dict[str, int] = json.loads(out.stdout)
    return stats


def _rmas(config: Path) -> int:
    out = run_gateway("expected", "stats", "--config", str(config), timeout_s=60)
    return int(json.loads(out.stdout)["rmas"]) if out.returncode == 0 else 0


def _journaled(tmp_path: Path) -> int:
    try:
        with sqlite3.connect(
            f"file:{tmp_path / 'state' / 'buffer.sqlite3'}?mode=ro", uri=True, timeout=5
        ) as db:
            return int(db.execute("SELECT count(*) FROM journal").fetchone()[0])
    except sqlite3.Error:
        return 0


def _logged(daemon: DaemonProcess, event: str) -> int:
    return len([e for e in daemon.log_events() if e.get("event") == event])


def _peak_rss_b(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM in /proc")


def _online(broker: Mosquitto) -> bool:
    payload = retained(broker.port, f"{BASE}/status", timeout_s=1.0)
    return payload is not None and json.loads(payload).get("state") == "online"

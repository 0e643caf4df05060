"""Garbage from the broker, more of it than `receive_maximum`, then good scans: nothing wedges.

The link stops reading while `receive_maximum` messages wait for their PUBACK. Every message the
gateway refuses (an empty or binary scan, an over-long one, a command that is not JSON, one on a
topic it does not serve) must therefore be acknowledged and let go: otherwise 32 pieces of
garbage would hold the link shut and the good scans behind them would never arrive.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from tests.support.broker import Mosquitto
from tests.support.daemon import DaemonProcess, wait_until, write_config
from tests.support.scans import item_scan
from tests.support.wms import Collector, retained

pytestmark = pytest.mark.slow

BASE = "returns/milan-returns/dock-3"
RECEIVE_MAXIMUM = 8
GOOD = 50


def _garbage() -> list[tuple[str, bytes]]:
    scans = f"{BASE}/scans/hh-1"
    bad: list[tuple[str, bytes]] = [
        (scans, b""),
        (scans, b"   \r\n"),
        (scans, b"\xff\xfe\x00binary"),
        (scans, b"A" * 10_000),
        (f"{BASE}/cmd/expected-returns", b"{not json"),
        (f"{BASE}/cmd/expected-returns", b"[1, 2, 3]"),
        (f"{BASE}/cmd/replay", b'{"from_seq": -1}'),
        (f"{BASE}/cmd/no-such-command", b"{}"),
        (f"{BASE}/ack", b'{"ids": "not a list"}'),
    ]
    return bad * 6  # 54 refusals: several times the receive maximum


def test_garbage_past_the_receive_maximum_is_let_go_and_good_scans_follow(tmp_path: Path) -> None:
    broker = Mosquitto(tmp_path / "mosquitto")
    broker.start()
    config = write_config(
        tmp_path / "gateway.toml",
        broker_port=broker.port,
        state_dir=tmp_path / "state",
        stations=[{"id": "door-3", "kind": "receiving"}],
        readers=[{"kind": "mqtt-scanner", "id": "handhelds", "station": "door-3"}],
        mqtt={"receive_maximum": RECEIVE_MAXIMUM},
    )
    collector = Collector(broker.port, [f"{BASE}/movements", f"{BASE}/cmd-result/+"])
    collector.start()
    daemon = DaemonProcess(config, tmp_path / "daemon.log")
    daemon.start()
    try:
        wait_until(
            lambda: b'"online"' in (retained(broker.port, f"{BASE}/status") or b""),
            30,
            "gateway online",
        )
        good = [(f"{BASE}/scans/hh-2", item_scan(i).encode()) for i in range(GOOD)]
        _publish(broker.port, _garbage() + good)
        collector.wait_for(lambda c: len(c.distinct_ids()) >= GOOD, 60, "every good scan moved")
        errors = [m.json() for m in collector.received("/cmd-result/expected-returns")]
        events = daemon.log_events()
        assert daemon.alive()
    finally:
        daemon.terminate()
        collector.stop()
        broker.stop()
    assert len(collector.distinct_ids()) == GOOD
    assert errors, "malformed commands get a reply"
    assert not any(e["ok"] for e in errors), "and it is an error"
    paused = [e for e in events if e.get("event") == "mqtt_reading_paused"]
    rejected = [e for e in events if e.get("event") == "mqtt_scan_rejected"]
    assert paused, "the garbage alone filled the receive maximum: the gate was shut and reopened"
    assert rejected, "bad scans are logged"
    assert not [e for e in events if e.get("level") in ("error", "critical")], "no crash logged"
    print(json.dumps({"paused": len(paused), "rejected_scans": len(rejected)}))


def _publish(port: int, messages: list[tuple[str, bytes]]) -> None:
    """Publish at QoS 1 without waiting between messages, until the broker has them all."""
    done = threading.Semaphore(0)
    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    client.max_inflight_messages_set(0)
    client.on_publish = lambda *_: done.release()
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        for topic, payload in messages:
            client.publish(topic, payload, qos=1)
        for _ in messages:
            assert done.acquire(timeout=60), "the broker did not take them"
    finally:
        client.disconnect()
        client.loop_stop()

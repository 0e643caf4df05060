"""A WMS announces 1,000,000 RMAs in 500 messages, published without waiting: memory stays flat.

Acknowledging on arrival let the broker hand over everything at once, and the daemon held
~100 MB of JSON (71 MB -> 198 MB). Acknowledged only once applied, the broker keeps what the
daemon has not taken (MQTT 5 Receive Maximum), and the daemon's peak RSS stays under 120 MB.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from tests.support.broker import Mosquitto, free_port
from tests.support.daemon import DaemonProcess, run_gateway, tcp_handheld, wait_until, write_config
from tests.support.scans import gs1_check_digit
from tests.support.wms import Collector, retained

pytestmark = pytest.mark.slow

SITE = "milan-returns"
BASE = f"returns/{SITE}/dock-3"
MESSAGES = 500
RMAS_PER_MESSAGE = 2_000
PEAK_RSS_MAX_MB = 120.0


def _gtin(n: int) -> str:
    body = f"0614141{n % 1_000_000:06d}"
    return body + str(gs1_check_digit(body))


def _announcement(message: int) -> bytes:
    first = message * RMAS_PER_MESSAGE
    rmas = [
        {
            "rma": f"RMA-{i:07d}",
            "customer": f"C-{i % 9973}",
            "items": [{"gtin": _gtin(i), "serial": f"E{i:07d}"}],
        }
        for i in range(first, first + RMAS_PER_MESSAGE)
    ]
    return json.dumps({"action": "add", "rmas": rmas}).encode()


def _publish_all(port: int, topic: str, payloads: list[bytes]) -> None:
    """Publish every payload at QoS 1 at once (a WMS that does not wait), until all are PUBACKed."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="wms-announcer")
    client.max_inflight_messages_set(len(payloads))
    client.max_queued_messages_set(0)
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        infos = [client.publish(topic, payload, qos=1) for payload in payloads]
        for info in infos:
            info.wait_for_publish(timeout=300)
    finally:
        client.loop_stop()
        client.disconnect()


def _peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


def test_a_million_rmas_in_500_messages_keep_memory_flat(tmp_path: Path, broker: Mosquitto) -> None:
    config = write_config(
        tmp_path / "gateway.toml",
        broker_port=broker.port,
        state_dir=tmp_path / "state",
        stations=[{"id": "door-3", "kind": "receiving"}],
        readers=[tcp_handheld(free_port())],
        buffer={"max_bytes": 2 * 1024**3},
    )
    payloads = [_announcement(m) for m in range(MESSAGES)]
    with (
        Collector(broker.port, [f"{BASE}/cmd-result/expected-returns"]) as replies,
        DaemonProcess(config, tmp_path / "daemon.log") as daemon,
    ):
        wait_until(
            lambda: b'"online"' in (retained(broker.port, f"{BASE}/status") or b""),
            30,
            "the daemon online",
        )
        assert daemon.proc is not None
        started = time.monotonic()
        publisher = threading.Thread(
            target=_publish_all,
            args=(broker.port, f"{BASE}/cmd/expected-returns", payloads),
        )
        publisher.start()
        replies.wait_for(
            lambda c: len(c.received("/expected-returns")) >= MESSAGES, 400, f"{MESSAGES} replies"
        )
        took_s = time.monotonic() - started
        publisher.join(60)
        peak_mb = _peak_rss_mb(daemon.proc.pid)
        answers: list[dict[str, Any]] = [r.json() for r in replies.received("/expected-returns")]
        assert daemon.alive()
    stats = run_gateway("expected", "stats", "--config", str(config))
    assert stats.returncode == 0, stats.stderr
    counts = json.loads(stats.stdout)
    print(f"1,000,000 RMAs in {took_s:.1f} s, peak RSS {peak_mb:.1f} MB")
    assert len(answers) == MESSAGES
    assert all(a["ok"] and a["accepted"] == RMAS_PER_MESSAGE for a in answers), answers[:3]
    assert counts["open_rmas"] == MESSAGES * RMAS_PER_MESSAGE
    assert peak_mb < PEAK_RSS_MAX_MB, f"peak RSS {peak_mb:.1f} MB"

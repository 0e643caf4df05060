"""Network partitions between the daemon and the broker through a TCP proxy the test controls.

Sizes: 3,000 scans at 150/s (20 s of input) through daemon -> proxy -> mosquitto, keepalive 2 s
and stall timeout 2 s, with each fault held for a few seconds.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.support.broker import Mosquitto
from tests.support.daemon import DaemonProcess, buffer_stats, wait_until, write_config
from tests.support.proxy import Mode, Proxy
from tests.support.scans import scan_events, write_jsonl
from tests.support.wms import Collector

pytestmark = pytest.mark.slow

BASE = "returns/milan-returns/dock-3"
SCANS = 3_000
RATE_PER_S = 150
DEAD_LINK_EVENTS = ("broker_link_stalled", "broker_link_lost")


def _dead_link_seen(daemon: DaemonProcess, after: int) -> bool:
    events = daemon.log_events()[after:]
    return any(e.get("event") in DEAD_LINK_EVENTS for e in events)


def _connected_count(daemon: DaemonProcess) -> int:
    return sum(1 for e in daemon.log_events() if e.get("event") == "broker_connected")


def _hold(proxy: Proxy, mode: Mode, seconds: float) -> None:
    proxy.set_mode(mode)
    time.sleep(seconds)


def test_blackhole_drop_and_slow_links_lose_nothing(tmp_path: Path, broker: Mosquitto) -> None:
    replay = write_jsonl(tmp_path / "events.jsonl", scan_events(SCANS))
    with Proxy(broker.port, delay_s=0.3) as proxy:
        config = write_config(
            tmp_path / "gateway.toml",
            broker_port=proxy.port,
            state_dir=tmp_path / "state",
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
            mqtt={"keepalive_s": 2, "stall_timeout_s": 2.0},
        )
        with Collector(broker.port, [f"{BASE}/movements"]) as collector:
            daemon = DaemonProcess(config, tmp_path / "daemon.log")
            daemon.start()
            try:
                collector.wait_for(lambda c: len(c.received()) >= 50, 30, "movements flowing")

                # Blackhole without FIN: only keepalive or the stall timeout can see it.
                mark = len(daemon.log_events())
                connected = _connected_count(daemon)
                proxy.set_mode("blackhole")
                wait_until(lambda: _dead_link_seen(daemon, mark), 15, "dead link detected")
                frozen = len(collector.distinct_ids())
                time.sleep(1.0)
                assert len(collector.distinct_ids()) == frozen, "nothing passes a blackhole"
                proxy.set_mode("pass")
                wait_until(lambda: _connected_count(daemon) > connected, 20, "reconnected")
                collector.wait_for(lambda c: len(c.distinct_ids()) > frozen, 20, "flow resumed")

                # Drop: every connection reset (RST) and new ones refused for a while.
                mark = len(daemon.log_events())
                connected = _connected_count(daemon)
                _hold(proxy, "drop", 3.0)
                assert _dead_link_seen(daemon, mark), "a reset link must be reported"
                proxy.set_mode("pass")
                wait_until(lambda: _connected_count(daemon) > connected, 20, "reconnected")

                # Slow: bytes still flow, late; nothing may be lost or doubled with another id.
                before = len(collector.distinct_ids())
                _hold(proxy, "slow", 4.0)
                proxy.set_mode("pass")
                collector.wait_for(lambda c: len(c.distinct_ids()) > before, 20, "flow after slow")

                collector.wait_for(lambda c: len(c.distinct_ids()) >= SCANS, 90, "every movement")
                wait_until(lambda: buffer_stats(config)["pending"] == 0, 30, "outbox drained")
                assert daemon.alive()
                assert daemon.terminate() == 0
            finally:
                if daemon.alive():
                    daemon.kill()
            messages = collector.received()

    by_id: dict[str, bytes] = {}
    for message in messages:
        previous = by_id.setdefault(message.json()["id"], message.payload)
        assert previous == message.payload, "a duplicate must carry the same content"
    assert len(by_id) == SCANS
    first_seqs: list[int] = []
    seen: set[str] = set()
    for message in messages:
        body = message.json()
        if body["id"] not in seen:
            seen.add(body["id"])
            first_seqs.append(body["seq"])
    assert first_seqs == list(range(1, SCANS + 1)), "first copies arrive in seq order, no hole"
    serials = {message.json()["item"]["serial"] for message in messages}
    assert serials == {f"{i:08d}" for i in range(SCANS)}

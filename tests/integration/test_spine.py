"""The store-and-forward spine end to end: the daemon as a subprocess, a real mosquitto, SQLite."""

from __future__ import annotations

import json
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.support.broker import Mosquitto
from tests.support.daemon import DaemonProcess, buffer_stats, wait_until, write_config
from tests.support.scans import scan_events, write_jsonl
from tests.support.wms import Collector, publish, retained

pytestmark = pytest.mark.slow

BASE = "returns/milan-returns/dock-3"
STATION = {"id": "door-3", "kind": "receiving"}


def _config(
    tmp_path: Path,
    broker: Mosquitto,
    events: int,
    *,
    mqtt: dict[str, Any] | None = None,
    buffer: dict[str, Any] | None = None,
    rate_per_s: float = 20_000,
    start: int = 0,
) -> Path:
    replay = write_jsonl(tmp_path / "events.jsonl", scan_events(events, start=start))
    return write_config(
        tmp_path / "gateway.toml",
        broker_port=broker.port,
        state_dir=tmp_path / "state",
        stations=[STATION],
        readers=[
            {
                "kind": "replay",
                "id": "replay-1",
                "station": "door-3",
                "file": str(replay),
                "rate_per_s": rate_per_s,
            }
        ],
        mqtt=mqtt,
        buffer=buffer,
    )


def _assert_in_seq_order_and_complete(collector: Collector, expected: int) -> None:
    messages = [m.json() for m in collector.received()]
    first_seen: dict[str, int] = {}
    for message in messages:
        first_seen.setdefault(message["id"], message["seq"])
    seqs = list(first_seen.values())
    assert len(first_seen) == expected, f"{len(first_seen)} distinct ids, expected {expected}"
    assert seqs == sorted(seqs), "first copies did not arrive in seq order"
    assert seqs == list(range(1, expected + 1)), "seq must be 1..N with no hole"


def test_backlog_built_while_broker_down_arrives_complete_in_order(tmp_path: Path) -> None:
    broker = Mosquitto(tmp_path / "mosquitto")
    broker.start()
    collector = Collector(broker.port, [f"{BASE}/movements"])
    collector.prime()
    broker.stop()
    config = _config(tmp_path, broker, 10_000)
    with DaemonProcess(config, tmp_path / "daemon.log") as daemon:
        wait_until(lambda: buffer_stats(config)["pending"] == 10_000, 120, "10,000 pending rows")
        assert daemon.alive()
        broker.start()
        with collector:
            collector.wait_for(lambda c: len(c.distinct_ids()) >= 10_000, 120, "10,000 movements")
            _assert_in_seq_order_and_complete(collector, 10_000)
            message = collector.received()[0].json()
            assert message["schema"] == "dock-gateway/movement/1"
            assert message["type"] == "receipt"
            assert message["station"] == "door-3"
            assert message["item"]["gtin"] is not None
        wait_until(lambda: buffer_stats(config)["pending"] == 0, 30, "outbox drained")
        assert daemon.terminate() == 0
    broker.stop()


def test_sigkill_five_times_while_draining_loses_nothing(tmp_path: Path) -> None:
    broker = Mosquitto(tmp_path / "mosquitto")
    broker.start()
    collector = Collector(broker.port, [f"{BASE}/movements"])
    collector.prime()
    broker.stop()
    config = _config(tmp_path, broker, 20_000, mqtt={"max_inflight": 20})
    daemon = DaemonProcess(config, tmp_path / "daemon.log")
    daemon.start()
    try:
        wait_until(lambda: buffer_stats(config)["pending"] == 20_000, 180, "20,000 pending rows")
        broker.start()
        rng = random.Random(7)
        with collector:
            for _ in range(5):
                time.sleep(rng.uniform(0.3, 1.5))
                daemon.kill()
                daemon.start()
            collector.wait_for(lambda c: len(c.distinct_ids()) >= 20_000, 180, "20,000 movements")
            by_id: dict[str, bytes] = {}
            for message in collector.received():
                previous = by_id.setdefault(message.json()["id"], message.payload)
                assert previous == message.payload, "a duplicate must carry the same content"
            assert len(by_id) == 20_000
            seqs = sorted(json.loads(p)["seq"] for p in by_id.values())
            assert seqs == list(range(1, 20_001))
    finally:
        if daemon.alive():
            daemon.terminate()
        broker.stop()


def test_broker_flaps_and_last_will(tmp_path: Path) -> None:
    broker = Mosquitto(tmp_path / "mosquitto")
    broker.start()
    config = _config(tmp_path, broker, 6_000, rate_per_s=1_000)
    with Collector(broker.port, [f"{BASE}/movements"]) as collector:
        daemon = DaemonProcess(config, tmp_path / "daemon.log")
        daemon.start()
        try:
            for _ in range(3):
                collector.wait_for(lambda c: len(c.received()) > 0, 30, "some movements")
                time.sleep(0.7)
                broker.stop()
                time.sleep(1.0)
                broker.start()
            collector.wait_for(lambda c: len(c.distinct_ids()) >= 6_000, 120, "6,000 movements")
            assert len(collector.distinct_ids()) == 6_000
            wait_until(lambda: _status(broker) == "online", 20, "status online")
            daemon.kill()
            wait_until(lambda: _status(broker) == "offline", 30, "Last Will: status offline")
            daemon.start()
            wait_until(lambda: _status(broker) == "online", 30, "status online after restart")
        finally:
            if daemon.alive():
                daemon.terminate()
    broker.stop()


def _status(broker: Mosquitto) -> str | None:
    payload = retained(broker.port, f"{BASE}/status", timeout_s=2.0)
    return None if payload is None else json.loads(payload).get("state")


def test_wms_delivery_mode_needs_acks(tmp_path: Path, broker: Mosquitto) -> None:
    config = _config(tmp_path, broker, 50, mqtt={"delivery": "wms", "ack_timeout_s": 2.0})
    with Collector(broker.port, [f"{BASE}/movements"]) as collector:
        daemon = DaemonProcess(config, tmp_path / "daemon.log")
        daemon.start()
        try:
            collector.wait_for(lambda c: len(c.distinct_ids()) >= 50, 30, "50 movements")
            assert buffer_stats(config)["pending"] == 50, "nothing leaves the outbox before an ack"
            first_ids = [m.json()["id"] for m in collector.received()[:50]]
            # Unacked: the same ids come again after ack_timeout_s.
            collector.wait_for(lambda c: len(c.received()) >= 100, 20, "re-sent movements")
            again = {m.json()["id"] for m in collector.received()[50:]}
            assert again <= set(first_ids)
            # Ack 20 by id and everything up to seq 30 cumulatively.
            publish(broker.port, f"{BASE}/ack", json.dumps({"ids": first_ids[:20]}).encode())
            publish(broker.port, f"{BASE}/ack", json.dumps({"upto_seq": 30}).encode())
            wait_until(lambda: buffer_stats(config)["pending"] == 20, 20, "30 rows acked")
            assert daemon.terminate() == 0
            count_before = len(collector.received())
            daemon.start()
            collector.wait_for(
                lambda c: len(c.received()) >= count_before + 20, 30, "resend after restart"
            )
            time.sleep(1.0)
            resent = [m.json() for m in collector.received()[count_before:]]
            assert resent, "unacked rows must be sent again after a restart"
            assert all(m["seq"] > 30 for m in resent), "acked rows must not be sent again"
        finally:
            if daemon.alive():
                daemon.terminate()


def test_malformed_acks_and_commands_are_counted_not_fatal(
    tmp_path: Path, broker: Mosquitto
) -> None:
    config = _config(tmp_path, broker, 10, mqtt={"delivery": "wms", "ack_timeout_s": 60.0})
    with Collector(broker.port, [f"{BASE}/movements", f"{BASE}/cmd-result/+"]) as collector:
        daemon = DaemonProcess(config, tmp_path / "daemon.log")
        daemon.start()
        try:
            collector.wait_for(lambda c: len(c.distinct_ids()) >= 10, 30, "10 movements")
            garbage = [
                b"not json",
                b'{"ids": 5}',
                b"[1,2,3]",
                b'{"upto_seq": "x"}',
                bytes(random.Random(1).getrandbits(8) for _ in range(1_000_000)),
            ]
            for payload in garbage:
                publish(broker.port, f"{BASE}/ack", payload)
                publish(broker.port, f"{BASE}/cmd/expected-returns", payload)
            publish(broker.port, f"{BASE}/cmd/no-such-command", b"{}")
            daemon.wait_for_log("ack_rejected", count=len(garbage))
            daemon.wait_for_log("command_rejected", count=len(garbage) + 1)
            assert daemon.alive()
            # It goes on: a good ack still works.
            publish(broker.port, f"{BASE}/ack", json.dumps({"upto_seq": 10}).encode())
            wait_until(lambda: buffer_stats(config)["pending"] == 0, 20, "good ack applied")
            results = collector.received("/cmd-result/expected-returns")
            assert results
            assert all(json.loads(r.payload)["ok"] is False for r in results)
        finally:
            if daemon.alive():
                daemon.terminate()


@pytest.mark.parametrize(
    ("mutation", "named"),
    [
        ("[mqtt]\nport = 1883\nprot = 1\n", "mqtt.prot"),
        ("", "gateway.site"),
        ('[[stations]]\nid = "x"\nkind = "returning"\n', "stations.1.kind"),
    ],
)
def test_bad_config_exits_2_naming_the_key(tmp_path: Path, mutation: str, named: str) -> None:
    base = '[gateway]\nid = "dock-3"\n'
    if named != "gateway.site":
        base += 'site = "milan-returns"\n'
    text = base + '[[stations]]\nid = "door-3"\nkind = "receiving"\n' + mutation
    path = tmp_path / "bad.toml"
    path.write_text(text, encoding="utf-8")
    for command in (["check-config", str(path)], ["run", "--config", str(path)]):
        done = subprocess.run(
            [sys.executable, "-m", "gateway", *command],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert done.returncode == 2, done.stderr
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1, lines
        assert named in lines[0]


def test_tiny_buffer_keeps_movements_drops_raw_and_reports_a_gap(tmp_path: Path) -> None:
    broker = Mosquitto(tmp_path / "mosquitto")
    broker.start()
    collector = Collector(broker.port, [f"{BASE}/movements"])
    collector.prime()
    broker.stop()
    config = _config(tmp_path, broker, 3_000, buffer={"max_bytes": 256 * 1024}, rate_per_s=2_000)
    with DaemonProcess(config, tmp_path / "daemon.log") as daemon:
        daemon.wait_for_log("input_refused_buffer_full", timeout_s=60)
        wait_until(lambda: daemon.log_events() and _replay_done(daemon), 60, "replay finished")
        stats = buffer_stats(config)
        assert stats["gaps_total"] >= 1
        assert stats["refused_events_total"] > 0
        made = stats["last_seq"]
        broker.start()
        with collector:
            collector.wait_for(lambda c: len(c.distinct_ids()) >= made, 60, "every movement made")
            messages = [m.json() for m in collector.received()]
            gaps = [m for m in messages if m["type"] == "gap"]
            receipts = {m["id"] for m in messages if m["type"] == "receipt"}
            assert gaps, "a gap record must be published"
            refused = sum(int(g["detail"]["refused_events"]) for g in gaps)
            assert refused == stats["refused_events_total"]
            assert len(receipts) + refused == 3_000, "every scan is either a movement or in a gap"
    broker.stop()


def _replay_done(daemon: DaemonProcess) -> bool:
    return any(e.get("event") == "replay_finished" for e in daemon.log_events())


def test_sigterm_stops_cleanly_within_5_seconds(tmp_path: Path, broker: Mosquitto) -> None:
    config = _config(tmp_path, broker, 200)
    daemon = DaemonProcess(config, tmp_path / "daemon.log")
    daemon.start()
    try:
        wait_until(lambda: _status(broker) == "online", 30, "status online")
        daemon.wait_for_log("replay_finished")
        assert daemon.proc is not None
        started = time.monotonic()
        code = daemon.terminate(timeout_s=10)
        elapsed = time.monotonic() - started
        assert code == 0
        assert elapsed < 5.0, f"shutdown took {elapsed:.1f}s"
        payload = retained(broker.port, f"{BASE}/status")
        assert payload is not None
        assert json.loads(payload)["state"] == "offline", "a clean stop publishes offline itself"
        assert [e for e in daemon.log_events() if e.get("event") == "gateway_stopped"]
        stats = buffer_stats(config)
        assert stats["last_seq"] == 200
        assert stats["cursor"] == stats["journal_last_id"], "the pipeline consumed every raw event"
    finally:
        if daemon.alive():
            daemon.kill()


def test_buffer_export_raw_is_the_replay_format(tmp_path: Path, broker: Mosquitto) -> None:
    events: list[dict[str, Any]] = []
    for i in range(50):
        at = f"2026-11-22T09:{i // 60:02d}:{i % 60:02d}.250Z"
        events.append(
            {
                "kind": "tag",
                "epc": f"3074257BF7194E40000{i:05X}",
                "antenna": 1 + i % 4,
                "rssi_dbm": -50.5,
                "at": at,
            }
        )
        events.append({"kind": "barcode", "data": f"RMA-{i:06d}", "at": at})
    replay = write_jsonl(tmp_path / "events.jsonl", events)
    config = write_config(
        tmp_path / "gateway.toml",
        broker_port=broker.port,
        state_dir=tmp_path / "state",
        stations=[STATION],
        readers=[{"kind": "replay", "id": "replay-1", "station": "door-3", "file": str(replay)}],
    )
    with DaemonProcess(config, tmp_path / "daemon.log") as daemon:
        daemon.wait_for_log("replay_finished")
        wait_until(lambda: buffer_stats(config)["journal_last_id"] == 100, 30, "100 journaled")
        assert daemon.terminate() == 0
    done = subprocess.run(
        [sys.executable, "-m", "gateway", "buffer", "export", "--config", str(config), "--raw"],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    exported = [json.loads(line) for line in done.stdout.splitlines()]
    assert len(exported) == 100
    for original, line in zip(events, exported, strict=True):
        assert line["kind"] == original["kind"]
        assert line["at"] == original["at"]
        assert line["station"] == "door-3"
        assert line["reader"] == "replay-1"
        assert line.get("epc", line.get("data")) == original.get("epc", original.get("data"))

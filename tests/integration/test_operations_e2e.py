"""Operations end to end through the real daemon: profile apply, rollback, signed commands, health.

The daemon runs as a subprocess against the LLRP simulator (in a thread, so its record of what the
reader was sent can be read) and a real mosquitto.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest

from gateway.domain.signing import sign_command
from gateway.readers.llrp.frames import ROSpec
from gateway.readers.llrp.scenario import Fault, Pass, Scenario, ScenarioTag, sgtin96_hex
from tests.support.broker import Mosquitto, free_port
from tests.support.daemon import DaemonProcess, http_get, run_gateway, wait_until, write_config
from tests.support.llrp_sim import SimulatorThread
from tests.support.portal import portal_profile
from tests.support.wms import Collector, publish

pytestmark = pytest.mark.slow

BASE = "returns/milan-returns/dock-3"
READER = "door-3-portal"
KEY_ENV = "DOCK_GATEWAY_TEST_CMD_KEY"
KEY = b"test-command-key-0123456789abcdef"
# A second profile: lower power, another mode and session, fewer antennas.
LOW_PROFILE = """
name = "test-low"
model = "generic-llrp"
[reader]
reader_mode = 2
session = 1
tag_population = 16
search_mode = "single-target"
report_every_n_tags = 16
keepalive_s = 2.0
rssi_floor_dbm = -80.0
[[antennas]]
port = 1
power_dbm = 20.0
[[antennas]]
port = 2
power_dbm = 20.0
[[antennas]]
port = 3
power_dbm = 20.0
[[antennas]]
port = 4
power_dbm = 20.0
"""


def _config(
    tmp_path: Path,
    broker: Mosquitto,
    *,
    sim_port: int | None,
    health_port: int,
    security: bool = False,
) -> Path:
    """write_config, with the health endpoint on and (optionally) signed commands required."""
    profiles = tmp_path / "profiles"
    profiles.mkdir(exist_ok=True)
    (profiles / "test-portal.toml").write_text(
        portal_profile("test-portal", tag_population=64, report_every_n_tags=64, keepalive_s=2.0)
    )
    (profiles / "test-low.toml").write_text(LOW_PROFILE)
    readers = []
    if sim_port is not None:
        readers.append(
            {
                "kind": "llrp",
                "id": READER,
                "host": "127.0.0.1",
                "port": sim_port,
                "station": "door-3",
                "profile": "test-portal",
                "zones": {"outside": [1, 2], "inside": [3, 4]},
            }
        )
    extra = (
        f"[profiles]\ndir = {json.dumps(str(profiles))}\n"
        "rollback_watch_s = 1.5\nrollback_drop_share = 0.5\n"
    )
    if security:
        extra += f'[security]\ncommand_key_env = "{KEY_ENV}"\ncommand_window_s = 60\n'
    path = write_config(
        tmp_path / "gateway.toml",
        broker_port=broker.port,
        state_dir=tmp_path / "state",
        stations=[{"id": "door-3", "kind": "receiving", "absent_s": 2.0}],
        readers=readers,
        extra=extra,
    )
    # TOML forbids a repeated [health] table: switch the one write_config wrote.
    text = path.read_text(encoding="utf-8")
    on = f'[health]\nenabled = true\nlisten = "127.0.0.1:{health_port}"\n'
    assert "[health]\nenabled = false\n" in text
    path.write_text(text.replace("[health]\nenabled = false\n", on, 1), encoding="utf-8")
    return path


def _scenario() -> Scenario:
    """Tags in view of all four antennas for the whole (long) scenario."""
    tags = tuple(
        ScenarioTag(
            sgtin96_hex("0614141", "812345", 100 + i), (Pass(0.5, 600.0, (1, 2, 3, 4)),), "stray"
        )
        for i in range(5)
    )
    return Scenario("in-view", 600.0, tags)


def _history(config: Path) -> list[dict[str, Any]]:
    out = run_gateway("profiles", "history", "--config", str(config), "--reader", READER)
    assert out.returncode == 0, out.stderr
    return [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]


def _settings(spec: ROSpec | None) -> ROSpec:
    """A ROSpec without its id: what the reader was asked to do."""
    assert spec is not None
    return dataclasses.replace(spec, rospec_id=0)


def _results(collector: Collector, name: str) -> list[dict[str, Any]]:
    return [json.loads(r.payload) for r in collector.received(f"/cmd-result/{name}")]


def _events(collector: Collector) -> list[dict[str, Any]]:
    return [json.loads(r.payload) for r in collector.received("/events")]


def test_profile_apply_rollback_history_events_and_health(
    tmp_path: Path, broker: Mosquitto
) -> None:
    health_port = free_port()
    simulator = SimulatorThread(_scenario(), speed=1.0)
    with (
        simulator as sim,
        Collector(broker.port, [f"{BASE}/events", f"{BASE}/cmd-result/+"]) as collector,
    ):
        config = _config(tmp_path, broker, sim_port=sim.port, health_port=health_port)
        with DaemonProcess(config, tmp_path / "daemon.log") as daemon:
            wait_until(lambda: sim.record.last_rospec is not None, 30, "the first ROSpec")
            wait_until(lambda: sim.record.tag_reads_sent > 0, 30, "reads flowing")
            original = _settings(sim.record.last_rospec)
            sent = len(sim.record.rospecs)

            # 1. MQTT, by name: applied, and the reader is sent the new settings.
            request = {"reader": READER, "name": "test-low", "requested_by": "alice"}
            publish(broker.port, f"{BASE}/cmd/profile-apply", json.dumps(request).encode())
            collector.wait_for(lambda c: _results(c, "profile-apply"), 40, "cmd-result 1")
            result = _results(collector, "profile-apply")[0]
            assert result["ok"] is True, result
            assert result["outcome"] == "applied"
            low = _settings(sim.record.last_rospec)
            assert len(sim.record.rospecs) > sent
            assert low != original
            assert {a.session for a in low.antenna_settings} == {1}
            assert {a.session for a in original.antenna_settings} == {2}
            assert {a.mode_index for a in low.antenna_settings} == {2}
            assert {a.mode_index for a in original.antenna_settings} == {0}
            low_power = {a.power_index for a in low.antenna_settings}
            original_power = {a.power_index for a in original.antenna_settings}
            assert len(low_power) == 1
            assert len(original_power) == 1
            low_index, original_index = low_power.pop(), original_power.pop()
            assert low_index is not None
            assert original_index is not None
            assert low_index < original_index  # 20 dBm below 27 dBm

            # 2. Local CLI, the simulator refuses: rolled back, test-low in force again.
            sim.reject_next("ADD_ROSPEC")
            out = run_gateway(
                "profiles", "apply", "--config", str(config), "--reader", READER,
                "--by", "bob", str(tmp_path / "profiles" / "test-portal.toml"),
            )  # fmt: skip
            assert out.returncode == 1, out.stdout + out.stderr
            cli_result = json.loads(out.stdout)
            assert cli_result["ok"] is False
            assert cli_result["outcome"] == "rejected"
            assert len(sim.record.rejected) == 1, sim.record.rejected
            wait_until(
                lambda: _settings(sim.record.last_rospec) == low, 30, "the old ROSpec re-sent"
            )
            assert cli_result.get("rollback") == "applied"

            # 3. Local CLI, accepted: the original settings again.
            out = run_gateway(
                "profiles", "apply", "--config", str(config), "--reader", READER,
                "--by", "carol", str(tmp_path / "profiles" / "test-portal.toml"),
            )  # fmt: skip
            assert out.returncode == 0, out.stdout + out.stderr
            assert _settings(sim.record.last_rospec) == original

            # 4. MQTT, inline profile, refused by the reader: rolled back to the original.
            sim.reject_next("ADD_ROSPEC")
            low_inline = {
                "reader": READER,
                "profile": _profile_dict(tmp_path / "profiles" / "test-low.toml"),
                "requested_by": "dave",
            }
            publish(broker.port, f"{BASE}/cmd/profile-apply", json.dumps(low_inline).encode())
            collector.wait_for(lambda c: len(_results(c, "profile-apply")) >= 2, 40, "result 2")
            result = _results(collector, "profile-apply")[1]
            assert result["ok"] is False, result
            assert result["outcome"] == "rejected"
            assert len(sim.record.rejected) == 2, sim.record.rejected
            wait_until(
                lambda: _settings(sim.record.last_rospec) == original, 30, "original re-sent"
            )

            # 5. MQTT, a profile the reader takes, but then it goes silent (the simulator ignores
            # the ROSpec's antenna list, so silence is the cheap way to make the rate drop):
            # rolled back after the watch window.
            time.sleep(2.0)  # a full rate window under the original profile
            sessions = len(sim.record.rospecs)
            request = {"reader": READER, "name": "test-low", "requested_by": "erin"}
            publish(broker.port, f"{BASE}/cmd/profile-apply", json.dumps(request).encode())
            wait_until(lambda: len(sim.record.rospecs) > sessions, 30, "the new ROSpec")
            assert simulator._loop is not None
            asyncio.run_coroutine_threadsafe(
                sim.inject(Fault(0.0, "silent")), simulator._loop
            ).result(timeout=10)
            collector.wait_for(lambda c: len(_results(c, "profile-apply")) >= 3, 40, "result 3")
            result = _results(collector, "profile-apply")[2]
            assert result["ok"] is False, result
            assert result["outcome"] == "rolled-back", result
            assert "read rate fell" in result["reason"]
            wait_until(
                lambda: _settings(sim.record.last_rospec) == original, 30, "original after drop"
            )

            # Every change in the history (SQLite, read by the CLI) and on {base}/events.
            history = _history(config)
            assert [(h["requested_by"], h["outcome"]) for h in history] == [
                ("alice", "applied"),
                ("bob", "rejected"),
                ("carol", "applied"),
                ("dave", "rejected"),
                ("erin", "rolled-back"),
            ]
            assert [h["source"] for h in history] == ["mqtt", "local", "local", "mqtt", "mqtt"]
            assert history[0]["old"]["name"] == "test-portal"
            assert history[0]["new"]["name"] == "test-low"
            collector.wait_for(lambda c: len(_events(c)) >= 5, 10, "5 profile events")
            events = [e for e in _events(collector) if e.get("event") == "profile-change"]
            assert [(e["requested_by"], e["outcome"]) for e in events] == [
                (h["requested_by"], h["outcome"]) for h in history
            ]

            # Health and metrics of the same running daemon.
            status, body = http_get(f"http://127.0.0.1:{health_port}/healthz")
            healthz = json.loads(body)
            assert status == 200, healthz
            assert healthz["reasons"] == []
            # The pipeline's lag, live: it keeps up with a few tags, and what it says it has
            # journaled is in the SQLite file (committed before the flow counts it).
            lag = healthz["pipeline"]
            assert 0 < lag["cursor"] <= lag["journaled_id"], lag
            assert lag["rows_behind"] == lag["journaled_id"] - lag["cursor"]
            assert lag["journaled_id"] <= _journal_last_id(tmp_path / "state"), lag

            def caught_up() -> bool:
                now = json.loads(http_get(f"http://127.0.0.1:{health_port}/healthz")[1])
                return bool(now["pipeline"]["rows_behind"] == 0)

            wait_until(caught_up, 10, "the pipeline at the end of the journal")
            status, body = http_get(f"http://127.0.0.1:{health_port}/metrics")
            assert status == 200
            metrics = body
            for name in (
                "gateway_reader_events",
                "gateway_reader_state",
                "gateway_buffer_",
                "gateway_pipeline_rows_behind ",
                "gateway_pipeline_queued_events ",
                "gateway_mqtt_connected 1.0",
                'gateway_events_total{event="profile_changes_applied"} 2.0',
                'gateway_events_total{event="profile_changes_rejected"} 2.0',
                'gateway_events_total{event="profile_changes_rolled-back"} 1.0',
            ):
                assert name in metrics, name
            assert f'gateway_reader_state{{reader="{READER}",state="inventorying"}} 1.0' in metrics
            assert daemon.alive()

            # Broker gone: /metrics says so at once. HealthPolicy (broker_down_max_s = 120 s)
            # is not configurable, so /healthz stays 200 this soon; it is not asserted here.
            broker.stop()
            wait_until(
                lambda: (
                    "gateway_mqtt_connected 0.0"
                    in http_get(f"http://127.0.0.1:{health_port}/metrics")[1]
                ),
                20,
                "gateway_mqtt_connected 0",
            )
            status, body = http_get(f"http://127.0.0.1:{health_port}/healthz")
            assert status in (200, 503)
            assert json.loads(body)["broker"]["connected"] is False
            broker.start()
            assert daemon.alive()


def _journal_last_id(state_dir: Path) -> int:
    conn = sqlite3.connect(f"{(state_dir / 'buffer.sqlite3').as_uri()}?mode=ro", uri=True)
    try:
        return int(conn.execute("SELECT coalesce(max(id), 0) FROM journal").fetchone()[0])
    finally:
        conn.close()


def _profile_dict(path: Path) -> dict[str, Any]:
    import tomllib

    with path.open("rb") as handle:
        return tomllib.load(handle)


def test_signed_commands_good_applied_bad_missing_old_replayed_refused(
    tmp_path: Path, broker: Mosquitto
) -> None:
    health_port = free_port()
    config = _config(tmp_path, broker, sim_port=None, health_port=health_port, security=True)
    name = "expected-returns"
    body = json.dumps({"action": "add", "rmas": []})
    now = time.time()
    good = sign_command(name, body, KEY, now, "good-nonce-1")
    envelope = json.loads(good)
    bad = json.dumps({**envelope, "nonce": "another-nonce-1", "sig": "0" * 64}).encode()
    old = sign_command(name, body, KEY, now - 3600, "old-nonce-1")
    wrong_key = sign_command(name, body, b"not-the-key", now, "wrong-key-nonce-1")
    cases = [
        (good, True, None),
        (bad, False, "bad signature"),
        (body.encode(), False, ""),  # missing signature: a bare command
        (old, False, "window"),
        (good, False, "replayed"),
        (wrong_key, False, "bad signature"),
    ]
    env = {KEY_ENV: KEY.decode()}
    with (
        Collector(broker.port, [f"{BASE}/cmd-result/+", f"{BASE}/status"]) as collector,
        DaemonProcess(config, tmp_path / "daemon.log", env=env) as daemon,
    ):
        daemon.wait_for_log("gateway_started")
        collector.wait_for(
            lambda c: any(r.payload.startswith(b"{") for r in c.received("/status")),
            20,
            "the daemon online",
        )
        for index, (payload, _ok, _why) in enumerate(cases, start=1):
            publish(broker.port, f"{BASE}/cmd/{name}", payload)
            # One at a time: replies come back in order and each maps to its case.
            collector.wait_for(
                lambda c, n=index: len(_results(c, name)) >= n, 20, f"cmd-result {index}"
            )
        results = _results(collector, name)
        assert len(results) == len(cases)
        for (_payload, ok, why), result in zip(cases, results, strict=True):
            assert result["ok"] is ok, result
            if not ok:
                assert isinstance(result["error"], str)
                assert result["error"]
                assert why is None or why in result["error"], (why, result)
        refused = len(cases) - 1

        def counters() -> dict[str, Any]:
            status, body = http_get(f"http://127.0.0.1:{health_port}/healthz")
            assert status in (200, 503)
            found: dict[str, Any] = json.loads(body)["counters"]
            return found

        wait_until(
            lambda: counters().get("commands_refused_signature") == refused, 10, "the counter"
        )
        assert counters().get("commands_applied") == 1
        metrics = http_get(f"http://127.0.0.1:{health_port}/metrics")[1]
        assert f'gateway_events_total{{event="commands_refused_signature"}} {refused}.0' in metrics
        # The retained status topic carries the counters too.
        collector.wait_for(
            lambda c: any(
                json.loads(r.payload).get("counters", {}).get("commands_refused_signature")
                == refused
                for r in c.received("/status")
                if r.payload.startswith(b"{")
            ),
            10,
            "counters on the status topic",
        )
        assert daemon.alive()


def test_cli_apply_by_name_uses_the_configured_profile_dir(
    tmp_path: Path, broker: Mosquitto
) -> None:
    # No daemon: with the name found, the CLI gets as far as the (absent) endpoint, exit 1.
    config = _config(tmp_path, broker, sim_port=1, health_port=free_port())
    out = run_gateway("profiles", "apply", "--config", str(config), "--reader", READER, "test-low")
    assert "not found" not in out.stderr, out.stderr
    assert out.returncode == 1, out.stdout + out.stderr

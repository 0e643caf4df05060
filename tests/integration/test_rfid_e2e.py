"""RFID at the dock door end to end: LLRP simulator -> real sllurp -> daemon -> mosquitto -> WMS."""

from __future__ import annotations

import json
import os
import signal
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from gateway.readers.llrp.scenario import (
    Fault,
    Pass,
    Scenario,
    ScenarioTag,
    returns_door_scenario,
    sgtin96_hex,
)
from tests.support.broker import Mosquitto
from tests.support.daemon import DaemonProcess, wait_until
from tests.support.llrp_sim import SimulatorThread, sgtin96
from tests.support.portal import portal_config
from tests.support.wms import Collector

pytestmark = pytest.mark.slow

BASE = "returns/milan-returns/dock-3"


def _config(tmp_path: Path, broker: Mosquitto, port: int, keepalive_s: float) -> Path:
    return portal_config(
        tmp_path,
        broker.port,
        port,
        tag_population=64,
        report_every_n_tags=64,
        keepalive_s=keepalive_s,
    )


def _receipts(collector: Collector) -> list[dict[str, Any]]:
    return [m for m in (r.json() for r in collector.received()) if m["type"] == "receipt"]


def test_returns_door_exactly_one_receipt_per_item(tmp_path: Path, broker: Mosquitto) -> None:
    scenario = returns_door_scenario(items=500, pallets=20, strays=30, in_and_out=10, seed=3)
    roles = Counter(tag.role for tag in scenario.tags)
    assert roles == {"pallet": 500, "stray": 30, "in-and-out": 10}
    pallets = {tag.epc_hex for tag in scenario.tags if tag.role == "pallet"}
    with (
        SimulatorThread(scenario, speed=4.0) as sim,
        Collector(broker.port, [f"{BASE}/movements"]) as collector,
    ):
        config = _config(tmp_path, broker, sim.port, keepalive_s=2.0)
        with DaemonProcess(config, tmp_path / "daemon.log") as daemon:
            wait_until(
                lambda: (sim.scenario_time_s() or 0) >= scenario.duration_s,
                90,
                "the scenario to play out",
            )
            collector.wait_for(lambda c: len(_receipts(c)) >= 500, 30, "500 receipts")
            # Visits of the strays end once the reader stops seeing them; give them time to
            # (wrongly) turn into receipts before counting.
            wait_until(
                lambda: any(e.get("event") == "stray_tag" for e in daemon.log_events()),
                30,
                "the strays to be judged",
            )
            receipts = _receipts(collector)
            assert daemon.alive()
    by_epc = Counter(r["item"]["epc"] for r in receipts)
    assert len(receipts) == 500, f"{len(receipts)} receipts"
    assert max(by_epc.values()) == 1, "one receipt per item"
    expected = {sgtin96(epc) for epc in pallets}
    assert {(r["item"]["gtin"], r["item"]["serial"]) for r in receipts} == expected
    assert all(r["direction"] == "in" and r["evidence"]["source"] == "rfid" for r in receipts)
    assert all(r["evidence"]["reads"] >= 2 for r in receipts)


def _pallet(epc_start: int, count: int, t0: float) -> list[ScenarioTag]:
    return [
        ScenarioTag(
            sgtin96_hex("0614141", "812345", epc_start + i),
            (Pass(t0, t0 + 1.5, (1, 2), -50.0, 8.0), Pass(t0 + 1.3, t0 + 2.8, (3, 4), -52.0, 8.0)),
            "pallet",
        )
        for i in range(count)
    ]


def test_reader_drop_and_silence_detected_and_nothing_lost(
    tmp_path: Path, broker: Mosquitto
) -> None:
    # Pallets well clear of the faults: a drop at 20 s and silence at 44 s of scenario time.
    tags = [
        *_pallet(1000, 10, 2.0),
        *_pallet(2000, 10, 10.0),
        *_pallet(3000, 10, 30.0),
        *_pallet(4000, 10, 36.0),
        *_pallet(5000, 10, 60.0),
        *_pallet(6000, 10, 66.0),
    ]
    scenario = Scenario(
        "faults",
        75.0,
        tuple(tags),
        (Fault(20.0, "drop"), Fault(44.0, "silent")),
        {"outside": (1, 2), "inside": (3, 4)},
    )
    with (
        SimulatorThread(scenario, speed=1.5) as sim,
        Collector(broker.port, [f"{BASE}/movements", f"{BASE}/status"]) as collector,
    ):
        config = _config(tmp_path, broker, sim.port, keepalive_s=1.0)
        with DaemonProcess(config, tmp_path / "daemon.log") as daemon:
            wait_until(
                lambda: (sim.scenario_time_s() or 0) >= scenario.duration_s,
                90,
                "the scenario to play out",
            )
            collector.wait_for(lambda c: len(_receipts(c)) >= 60, 30, "60 receipts")
            events = daemon.log_events()
            unavailable = [e for e in events if e.get("event") == "reader_unavailable"]
            reconnected = [e for e in events if e.get("event") == "reader_reconnected"]
            assert any(
                "silent" in str(e.get("reason", "")) or "keepalive" in str(e.get("reason", ""))
                for e in unavailable
            ), unavailable
            assert len(unavailable) >= 2, "the drop and the silence are both detected"
            assert len(reconnected) >= 2, "the reader came back after each"
            assert sim.record.connections >= 3
            receipts = _receipts(collector)
            states = [
                json.loads(m.payload)["readers"]["door-3-portal"]["state"]
                for m in collector.received("/status")
                if json.loads(m.payload).get("state") == "online"
            ]
    assert {"down", "silent"} & set(states), f"status never showed the failure: {set(states)}"
    assert "inventorying" in states
    assert len(receipts) == 60
    assert {r["item"]["serial"] for r in receipts} == {
        str(n) for start in (1000, 2000, 3000, 4000, 5000, 6000) for n in range(start, start + 10)
    }


def test_a_frozen_daemon_reads_the_backlog_before_it_closes_visits(
    tmp_path: Path, broker: Mosquitto
) -> None:
    # A pallet crosses (outside 4.0-5.5 s, inside 5.3-6.8 s) while the daemon is stopped for 6 s
    # from 5.0 s: the rest of its reads wait in the socket. Woken 4 s past its visits' absent_s,
    # the daemon must read them before it closes any visit, so each visit spans both passes.
    scenario = Scenario(
        "freeze", 20.0, tuple(_pallet(7000, 20, 4.0)), (), {"outside": (1, 2), "inside": (3, 4)}
    )
    with (
        SimulatorThread(scenario, speed=1.0) as sim,
        Collector(broker.port, [f"{BASE}/movements"]) as collector,
    ):
        config = _config(tmp_path, broker, sim.port, keepalive_s=2.0)
        with DaemonProcess(config, tmp_path / "daemon.log") as daemon:
            assert daemon.proc is not None
            pid = daemon.proc.pid
            wait_until(lambda: (sim.scenario_time_s() or 0) >= 5.0, 60, "the pallet in the door")
            os.kill(pid, signal.SIGSTOP)
            try:
                wait_until(lambda: (sim.scenario_time_s() or 0) >= 11.0, 30, "6 s frozen")
            finally:
                os.kill(pid, signal.SIGCONT)
            collector.wait_for(lambda c: len(_receipts(c)) >= 20, 30, "20 receipts")
            wait_until(lambda: (sim.scenario_time_s() or 0) >= 14.0, 30, "visits to settle")
            receipts = _receipts(collector)
            events = daemon.log_events()
            assert daemon.alive()
    assert len(receipts) == 20
    assert {r["item"]["serial"] for r in receipts} == {str(n) for n in range(7000, 7020)}
    spans = [
        datetime.fromisoformat(r["evidence"]["last_seen"])
        - datetime.fromisoformat(r["evidence"]["first_seen"])
        for r in receipts
    ]
    assert min(spans).total_seconds() >= 2.5, "a visit was cut by the freeze"
    assert not [e for e in events if e.get("event") == "reader_unavailable"]

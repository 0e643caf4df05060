"""The door answers: a beam starts the portal, the stack light says expected, unexpected or problem.

LLRP simulator (GPI beam in the scenario, GPO writes recorded) -> real sllurp -> `gateway run`
-> real mosquitto; the WMS announces the expected returns on `cmd/expected-returns`.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from gateway.readers.llrp.scenario import GpiChange, Pass, Scenario, ScenarioTag, sgtin96_hex
from gateway.readers.llrp.simulator import LlrpSimulator
from tests.support.broker import Mosquitto
from tests.support.daemon import DaemonProcess, wait_until, write_config
from tests.support.llrp_sim import SimulatorThread, sgtin96
from tests.support.portal import portal_profile
from tests.support.wms import Collector, publish

pytestmark = pytest.mark.slow

BASE = "returns/milan-returns/dock-3"
HOLD_S = 2.0
LINGER_S = 1.0
ABSENT_S = 1.0
EXPECTED, UNEXPECTED, PROBLEM = 1, 2, 3
# Beam windows (scenario seconds) and the pallets crossing inside them.
BEAMS = ((4.0, 8.0), (13.0, 17.0), (22.0, 26.0))
PASS_S = 2.8  # outside antennas, then inside ones; the last read is at t0 + PASS_S


def _tag(serial: int, t0: float) -> ScenarioTag:
    return ScenarioTag(
        sgtin96_hex("0614141", "812345", serial),
        (Pass(t0, t0 + 1.5, (1, 2), -50.0, 8.0), Pass(t0 + 1.3, t0 + PASS_S, (3, 4), -52.0, 8.0)),
        "pallet",
    )


ANNOUNCED = [_tag(100 + i, BEAMS[0][0] + 0.5) for i in range(3)]
UNANNOUNCED = [_tag(200 + i, BEAMS[1][0] + 0.5) for i in range(2)]
# The first announced item comes through again: already received for its RMA.
AGAIN = [ScenarioTag(ANNOUNCED[0].epc_hex, _tag(100, BEAMS[2][0] + 0.5).passes, "again")]
PARKED = [
    ScenarioTag(sgtin96_hex("4012345", "100000", 900 + i), (Pass(0.0, 40.0, (3,), -58.0, 5.0),))
    for i in range(2)
]


def _scenario() -> Scenario:
    merged = [
        ScenarioTag(t.epc_hex, t.passes + a.passes, t.role)
        if (a := next((x for x in AGAIN if x.epc_hex == t.epc_hex), None))
        else t
        for t in ANNOUNCED
    ]
    beams = tuple(
        change
        for start, end in BEAMS
        for change in (GpiChange(start, 1, high=True), GpiChange(end, 1, high=False))
    )
    return Scenario(
        "dock-lights",
        34.0,
        (*merged, *UNANNOUNCED, *PARKED),
        zones={"outside": (1, 2), "inside": (3, 4)},
        gpi=beams,
    )


def _config(tmp_path: Path, broker: Mosquitto, port: int) -> Path:
    profiles = tmp_path / "profiles"
    profiles.mkdir()
    (profiles / "test-portal.toml").write_text(
        portal_profile("test-portal", tag_population=16, report_every_n_tags=1, keepalive_s=2.0)
    )
    lights = {
        "reader": "door-3-portal",
        "expected": EXPECTED,
        "unexpected": UNEXPECTED,
        "problem": PROBLEM,
        "hold_s": HOLD_S,
    }
    return write_config(
        tmp_path / "gateway.toml",
        broker_port=broker.port,
        state_dir=tmp_path / "state",
        stations=[{"id": "door-3", "kind": "receiving", "absent_s": ABSENT_S, "lights": lights}],
        readers=[
            {
                "kind": "llrp",
                "id": "door-3-portal",
                "host": "127.0.0.1",
                "port": port,
                "station": "door-3",
                "profile": "test-portal",
                "zones": {"outside": [1, 2], "inside": [3, 4]},
                "trigger": {"gpi": 1, "linger_s": LINGER_S},
            },
        ],
        extra=f'[profiles]\ndir = "{profiles}"\n',
    )


def _announce(broker: Mosquitto) -> None:
    items = [dict(zip(("gtin", "serial"), sgtin96(t.epc_hex), strict=True)) for t in ANNOUNCED]
    command = {"action": "add", "rmas": [{"rma": "RMA-24", "items": items}]}
    publish(broker.port, f"{BASE}/cmd/expected-returns", json.dumps(command).encode())


def _receipts(collector: Collector) -> list[dict[str, Any]]:
    return [
        m for m in (r.json() for r in collector.received("/movements")) if m["type"] == "receipt"
    ]


def _lit(sim: LlrpSimulator, port: int) -> list[tuple[float, float | None]]:
    """(on, off) monotonic times of each time `port` was lit."""
    spans: list[tuple[float, float | None]] = []
    for write in sim.gpo_history(port):
        if write.high and (not spans or spans[-1][1] is not None):
            spans.append((write.mono_s, None))
        elif not write.high and spans and spans[-1][1] is None:
            spans[-1] = (spans[-1][0], write.mono_s)
    return spans


def _scenario_mono(sim: LlrpSimulator, scenario_s: float) -> float:
    """The monotonic time of a scenario instant (speed 1)."""
    now_scenario = sim.scenario_time_s()
    assert now_scenario is not None
    return time.monotonic() - now_scenario + scenario_s


def test_beam_starts_the_portal_and_the_light_gives_the_verdict(
    tmp_path: Path, broker: Mosquitto
) -> None:
    scenario = _scenario()
    with (
        SimulatorThread(scenario, speed=1.0) as sim,
        Collector(
            broker.port, [f"{BASE}/movements", f"{BASE}/feedback/+", f"{BASE}/cmd-result/+"]
        ) as collector,
    ):
        config = _config(tmp_path, broker, sim.port)
        with DaemonProcess(config, tmp_path / "daemon.log") as daemon:
            daemon.wait_for_log("reader_inventorying", timeout_s=30)
            _announce(broker)
            collector.wait_for(
                lambda c: any(m.json()["ok"] for m in c.received("/cmd-result/expected-returns")),
                20,
                "announced",
            )
            # Beam low: the parked tags are in view, and nothing is read.
            wait_until(lambda: (sim.scenario_time_s() or 0) >= BEAMS[0][0] - 0.3, 30, "beam 1")
            assert sim.record.tag_reads_sent == 0
            assert _receipts(collector) == []
            # Pallet 1: three announced returns -> the expected light for hold_s.
            collector.wait_for(lambda c: len(_receipts(c)) >= 3, 20, "3 receipts")
            wait_until(lambda: _lit(sim, EXPECTED), 10, "the expected light")
            # The beam falls: the inventory stops within linger_s plus a second.
            wait_until(lambda: sim.record.rospec_stops_mono, 10, "inventory to stop")
            fell = next(c.mono_s for c in sim.record.gpi_changes if not c.high)
            assert sim.record.rospec_stops_mono[0] - fell < LINGER_S + 1.0
            reads_after_stop = sim.record.tag_reads_sent
            # Pallet 2: unannounced -> the unexpected light.
            wait_until(lambda: _lit(sim, UNEXPECTED), 25, "the unexpected light")
            # Pallet 3: an item already received for its RMA -> the problem light.
            wait_until(lambda: _lit(sim, PROBLEM), 25, "the problem light")
            wait_until(lambda: _lit(sim, PROBLEM)[-1][1] is not None, 10, "problem light off")
            # When each pallet's visits could close: its last read plus absent_s.
            closes = [_scenario_mono(sim, start + 0.5 + PASS_S) + ABSENT_S for start, _ in BEAMS]
            assert daemon.alive()
        receipts = _receipts(collector)
        feedback = [m.json() for m in collector.messages if "/feedback/" in m.topic]
    assert reads_after_stop > 0
    by_expected = sorted((r["expected"], tuple(r.get("flags", ()))) for r in receipts)
    assert by_expected == [
        (False, ()),
        (False, ()),
        (True, ()),
        (True, ()),
        (True, ()),
        (True, ("duplicate",)),
    ], by_expected
    # One light at a time, each for hold_s, then off; the order the pallets came in.
    verdicts = [m["verdict"] for m in feedback]
    assert verdicts == ["expected", None, "unexpected", None, "problem", None], verdicts
    for port in (EXPECTED, UNEXPECTED, PROBLEM):
        spans = _lit(sim, port)
        assert len(spans) == 1, (port, spans)
        on, off = spans[0]
        assert off is not None
        assert HOLD_S - 0.1 <= off - on <= HOLD_S + 0.5, (port, off - on)
    latencies_ms = [
        round((_lit(sim, port)[0][0] - close) * 1000)
        for port, close in zip((EXPECTED, UNEXPECTED, PROBLEM), closes, strict=True)
    ]
    print(f"light latency, visit end (last read + absent_s) to GPO write, ms: {latencies_ms}")
    assert max(latencies_ms) < 1000

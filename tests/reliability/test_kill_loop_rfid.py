"""The daemon SIGKILLed 20 times while pallets cross an LLRP portal, scans run, the broker flaps.

Reads a reader makes while no client is connected are lost at the reader, so the expected set
comes from the test's own record: each up period runs from the daemon's `reader_inventorying`
to the moment the test kills it. Every pallet item whose whole passage (both zones) fell inside
one up period must reach the WMS as exactly one receipt id; no item may ever get two different
receipt ids (a visit cut by a kill is restored from the journal and checkpoint, not doubled);
no stray or in-and-out tag may make one; every scan of the replay stream becomes one movement.
"""

from __future__ import annotations

import random
import time
from collections import defaultdict
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from gateway.readers.llrp.scenario import Pass, Scenario, ScenarioTag, sgtin96_hex
from tests.support.broker import Mosquitto
from tests.support.daemon import DaemonProcess, buffer_stats, wait_until, write_config
from tests.support.llrp_sim import SimulatorThread
from tests.support.portal import portal_profile
from tests.support.scans import scan_events, write_jsonl
from tests.support.wms import Collector

pytestmark = pytest.mark.slow

BASE = "returns/milan-returns/dock-3"
KILLS = 20
PALLET_EVERY_S = 4.0
PALLETS = 32
PER_PALLET = 6
ABSENT_S = 1.5
SCANS = 400
BROKER_DOWN_AT = {5: 8, 13: 16}  # kill number at which it stops -> kill number at which it starts


def _scenario() -> tuple[Scenario, dict[str, tuple[float, float]], tuple[str, float, float]]:
    """Pallets every few seconds, two strays, one item in and out; passage window per pallet EPC."""
    tags: list[ScenarioTag] = []
    windows: dict[str, tuple[float, float]] = {}
    serial = 1
    for pallet in range(PALLETS):
        t0 = 3.0 + pallet * PALLET_EVERY_S
        for _ in range(PER_PALLET):
            epc = sgtin96_hex("0614141", "812345", serial)
            serial += 1
            tags.append(
                ScenarioTag(
                    epc,
                    (
                        Pass(t0, t0 + 1.2, (1, 2), -50.0, 10.0),
                        Pass(t0 + 1.0, t0 + 2.2, (3, 4), -52.0, 10.0),
                    ),
                    "pallet",
                )
            )
            windows[epc] = (t0, t0 + 2.2)
    duration_s = 3.0 + PALLETS * PALLET_EVERY_S + 4.0
    for _ in range(2):
        tags.append(
            ScenarioTag(
                sgtin96_hex("0614141", "812345", serial),
                (Pass(0.0, duration_s, (3, 4), -68.0, 2.0),),
                "stray",
            )
        )
        serial += 1
    in_and_out = sgtin96_hex("0614141", "812345", serial)
    tags.append(
        ScenarioTag(
            in_and_out,
            (
                Pass(5.0, 6.2, (1, 2), -50.0, 10.0),
                Pass(6.0, 7.2, (3, 4), -50.0, 10.0),
                Pass(7.0, 8.2, (1, 2), -50.0, 10.0),
            ),
            "in-and-out",
        )
    )
    zones: dict[str, tuple[int, ...]] = {"outside": (1, 2), "inside": (3, 4)}
    scenario = Scenario("kill-loop", duration_s, tuple(tags), (), zones)
    return scenario, windows, (in_and_out, 5.0, 8.2)


def _log_time(event: dict[str, Any]) -> float:
    return datetime.fromisoformat(str(event["timestamp"])).timestamp()


def test_twenty_sigkills_while_pallets_cross_the_portal(tmp_path: Path) -> None:
    scenario, windows, (in_and_out, out_t0, out_t1) = _scenario()
    broker = Mosquitto(tmp_path / "mosquitto")
    broker.start()
    profiles = tmp_path / "profiles"
    profiles.mkdir()
    (profiles / "test-portal.toml").write_text(
        portal_profile("test-portal", tag_population=64, report_every_n_tags=64, keepalive_s=1.0)
    )
    replay = write_jsonl(tmp_path / "scans.jsonl", scan_events(SCANS))
    rng = random.Random(7)
    up_periods: list[tuple[float, float]] = []
    with (
        SimulatorThread(scenario, speed=1.0) as sim,
        Collector(broker.port, [f"{BASE}/movements"]) as collector,
    ):
        config = write_config(
            tmp_path / "gateway.toml",
            broker_port=broker.port,
            state_dir=tmp_path / "state",
            stations=[
                {"id": "door-3", "kind": "receiving", "absent_s": ABSENT_S},
                {"id": "recycle-1", "kind": "disposal"},
            ],
            readers=[
                {
                    "kind": "llrp",
                    "id": "door-3-portal",
                    "host": "127.0.0.1",
                    "port": sim.port,
                    "station": "door-3",
                    "profile": "test-portal",
                    "zones": {"outside": [1, 2], "inside": [3, 4]},
                },
                {
                    "kind": "replay",
                    "id": "scans",
                    "station": "recycle-1",
                    "file": str(replay),
                    "rate_per_s": 20.0,
                },
            ],
            extra=f'[profiles]\ndir = "{profiles}"\n',
        )
        daemon = DaemonProcess(config, tmp_path / "daemon.log")
        try:
            daemon.start()
            for kill in range(1, KILLS + 1):
                starts_before = len(_inventorying(daemon))
                wait_until(
                    lambda n=starts_before: len(_inventorying(daemon)) > n,
                    30,
                    "the reader to be inventorying",
                )
                up_from = _log_time(_inventorying(daemon)[-1])
                time.sleep(rng.uniform(2.5, 5.5))
                killed_at = time.time()
                daemon.kill()
                up_periods.append((up_from, killed_at))
                if kill in BROKER_DOWN_AT:
                    broker.stop()
                if kill in BROKER_DOWN_AT.values():
                    broker.start()
                daemon.start()
            broker.start()
            starts_before = len(_inventorying(daemon))
            wait_until(lambda: len(_inventorying(daemon)) > starts_before, 30, "last start")
            up_periods.append((_log_time(_inventorying(daemon)[-1]), float("inf")))
            wait_until(
                lambda: (sim.scenario_time_s() or 0) >= scenario.duration_s,
                200,
                "the scenario to play out",
            )
            wall_at_zero = time.time() - (sim.scenario_time_s() or 0.0)
            wait_until(lambda: buffer_stats(config)["pending"] == 0, 60, "the outbox to drain")
            time.sleep(1.0)
            messages = list(collector.received())
        finally:
            if daemon.alive():
                daemon.terminate()
    broker.stop()

    by_id: dict[str, bytes] = {}
    receipts_by_epc: dict[str, set[str]] = defaultdict(set)
    disposals: set[str] = set()
    for message in messages:
        body = message.json()
        assert by_id.setdefault(body["id"], message.payload) == message.payload, (
            "same id, same bytes"
        )
        if body["type"] == "receipt":
            receipts_by_epc[body["item"]["epc"]].add(body["id"])
        elif body["type"] == "disposal":
            disposals.add(body["item"]["serial"])
    pallet_uris = {_uri(epc): epc for epc in windows}

    def inside_an_up_period(t0: float, t1: float) -> bool:
        return any(
            start + 0.5 <= wall_at_zero + t0 and wall_at_zero + t1 + 0.5 <= end
            for start, end in up_periods
        )

    # The item carried in and back out makes a receipt only if the daemon was down while it went
    # out again: then the gateway saw it come in and never saw it leave. Strays never do.
    allowed = set(pallet_uris)
    if not inside_an_up_period(out_t0, out_t1):
        allowed.add(_uri(in_and_out))
    extra = set(receipts_by_epc) - allowed
    assert not extra, f"receipts for items that never crossed inward while watched: {extra}"
    doubled = {epc: ids for epc, ids in receipts_by_epc.items() if len(ids) > 1}
    assert not doubled, f"items with two receipt ids: {doubled}"
    fully_seen = {_uri(epc) for epc, (t0, t1) in windows.items() if inside_an_up_period(t0, t1)}
    assert len(fully_seen) >= PALLETS * PER_PALLET // 6, "the loop must leave items to check"
    missing = fully_seen - set(receipts_by_epc)
    assert not missing, f"{len(missing)} items crossed while the daemon was up and got no receipt"
    assert disposals == {f"{i:08d}" for i in range(SCANS)}, "every scan is one movement"


def _inventorying(daemon: DaemonProcess) -> list[dict[str, Any]]:
    return [e for e in daemon.log_events() if e.get("event") == "reader_inventorying"]


def _uri(epc_hex: str) -> str:
    """The pure-identity URI of the test's SGTIN-96 tags (company 0614141, item 812345)."""
    serial = int(epc_hex, 16) & ((1 << 38) - 1)
    return f"urn:epc:id:sgtin:0614141.812345.{serial}"

"""The wall clock jumps back 1 h and forward 3 h mid-stream, through the clock the daemon is given.

The daemon runs in-process with an injected wall clock (real time plus an offset the test moves);
its monotonic clock stays real, as on a device whose NTP steps the wall clock. The broker is down
across both jumps, so a backlog exists whose age the stats must report sanely.

Sizes: 1,500 scans at 150/s (10 s of input); back 1 h at 2 s, forward 3 h at 5 s, broker back at
8 s; stats and health sampled every 0.2 s.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway.config import load_config
from gateway.daemon import Daemon
from tests.support.broker import Mosquitto
from tests.support.daemon import write_config
from tests.support.scans import scan_events, write_jsonl
from tests.support.wms import Collector

pytestmark = pytest.mark.slow

BASE = "returns/milan-returns/dock-3"
SCANS = 1_500
RATE_PER_S = 150
BACK_S = -3600.0
FORWARD_S = 2 * 3600.0
# The largest age a row can honestly show: made just before the forward jump (3 h) plus the run.
AGE_BOUND_S = (FORWARD_S - BACK_S) + 300.0


class SteppedClock:
    """time.time() plus an offset the test steps, like NTP stepping a device's wall clock."""

    def __init__(self) -> None:
        self.offset_s = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset_s


def _numbers(value: object, path: str = "") -> Iterator[tuple[str, float]]:
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _numbers(item, f"{path}.{key}")
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            yield from _numbers(item, f"{path}[{index}]")
    elif isinstance(value, int | float) and not isinstance(value, bool):
        yield path, float(value)


def _negative_numbers(snapshot: object) -> list[tuple[str, float]]:
    """Numbers in a health or KPI snapshot that are below zero (signal strengths excepted)."""
    return [(p, v) for p, v in _numbers(snapshot) if v < 0 and not p.endswith("_dbm")]


async def test_wall_clock_jumps_lose_and_reorder_nothing_and_ages_stay_sane(tmp_path: Path) -> None:
    broker = Mosquitto(tmp_path / "mosquitto")
    broker.start()
    collector = Collector(broker.port, [f"{BASE}/movements"])
    collector.prime()
    broker.stop()
    replay = write_jsonl(tmp_path / "events.jsonl", scan_events(SCANS))
    config_path = write_config(
        tmp_path / "gateway.toml",
        broker_port=broker.port,
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
        mqtt={"kpi_interval_s": 1.0},
    )
    clock = SteppedClock()
    daemon = Daemon(load_config(config_path), clock=clock, install_signals=False)
    ages: list[float] = []
    negatives: list[tuple[str, float]] = []

    try:
        runner = asyncio.create_task(daemon.run(), name="daemon")
        started = time.monotonic()
        steps = [(2.0, BACK_S), (5.0, FORWARD_S)]
        broker_back = False
        try:
            while time.monotonic() - started < 120:
                elapsed = time.monotonic() - started
                if steps and elapsed >= steps[0][0]:
                    clock.offset_s = steps.pop(0)[1]
                if not broker_back and elapsed >= 8.0:
                    await asyncio.to_thread(broker.start)
                    await asyncio.to_thread(collector.start)
                    broker_back = True
                stats = await daemon.refresh_stats()
                if stats is not None and stats.oldest_pending_age_s is not None:
                    ages.append(stats.oldest_pending_age_s)
                negatives.extend(_negative_numbers(daemon.health()))
                negatives.extend(_negative_numbers(daemon.kpi_snapshot))
                done = stats is not None and stats.last_seq >= SCANS and stats.pending == 0
                if broker_back and not steps and done:
                    break
                assert not runner.done(), "the daemon stopped on its own"
                await asyncio.sleep(0.2)
            await asyncio.sleep(1.5)  # one more KPI round after the last movement
            negatives.extend(_negative_numbers(daemon.kpi_snapshot))
        finally:
            daemon.stop()
            code = await asyncio.wait_for(runner, 15)
    finally:
        collector.stop()
        broker.stop()
    assert code == 0

    assert ages, "a backlog existed during the outage: its age must have been reported"
    assert min(ages) >= 0.0, f"negative oldest_pending_age_s after the clock went back: {min(ages)}"
    assert max(ages) <= AGE_BOUND_S, f"absurd oldest_pending_age_s: {max(ages)}"
    assert not negatives, f"negative health/KPI numbers: {sorted(set(negatives))[:10]}"

    messages: list[dict[str, Any]] = [m.json() for m in collector.received()]
    first_seqs: list[int] = []
    seen: set[str] = set()
    for body in messages:
        if body["id"] not in seen:
            seen.add(body["id"])
            first_seqs.append(body["seq"])
    assert first_seqs == list(range(1, SCANS + 1)), "every movement once, first copies in seq order"
    serials = [body["item"]["serial"] for body in messages if body["id"] in seen]
    assert set(serials) == {f"{i:08d}" for i in range(SCANS)}
    by_id = {body["id"]: body["item"]["serial"] for body in messages}
    assert len(set(by_id.values())) == len(by_id) == SCANS, "one movement id per item"

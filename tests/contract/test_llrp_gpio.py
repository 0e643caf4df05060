"""GPIO through the real LLRP driver (sllurp inside) and the real simulator over real TCP."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Callable

import pytest
from llrpkit.emulator.core import EmulatedTag

from gateway.domain.events import InputHeard, TagRead
from gateway.errors import ReaderRejectedConfig
from gateway.readers.llrp import frames as f
from gateway.readers.llrp.driver import LlrpDriver
from gateway.readers.llrp.gpio import START_TRIGGER_GPI, GpoLatch
from gateway.readers.llrp.scenario import GpiChange, Pass, Scenario, ScenarioTag
from gateway.readers.llrp.settings import LlrpSettings
from gateway.readers.llrp.simulator import LlrpSimulator
from tests.support.llrpkit import CountingEmulator

FAST = LlrpSettings(keepalive_s=1.0, connect_timeout_s=5.0, disconnect_timeout_s=2.0)
LIGHTS = dataclasses.replace(FAST, gpo_ports=(1, 2, 3))


async def until(condition: Callable[[], bool], timeout_s: float) -> None:
    """Let the loop run until `condition` holds; TimeoutError after `timeout_s`."""
    async with asyncio.timeout(timeout_s):
        while not condition():
            await asyncio.sleep(0.005)


async def drain(driver: LlrpDriver, seconds: float) -> None:
    """Consume the driver's events for a while (notices are taken as batches are read)."""
    try:
        async with asyncio.timeout(seconds):
            async for event in driver.events():
                assert isinstance(event, InputHeard | TagRead)
    except TimeoutError:
        return


async def test_gpo_writes_reach_the_reader_and_a_reconnect_gets_the_current_state() -> None:
    latch = GpoLatch("portal")
    async with LlrpSimulator(Scenario("empty", 60.0)) as sim:
        driver = LlrpDriver("portal", "door-1", "127.0.0.1", sim.port, LIGHTS, outputs=latch)
        async with driver:
            latch.set({1: True, 2: False, 3: False})
            await until(lambda: sim.record.gpo == {1: True, 2: False, 3: False}, 3.0)
        # While the reader is away the light changes; the next session writes it at connect.
        latch.set({1: False, 3: True})
        writes_before = len(sim.record.gpo_writes)
        async with driver:
            await until(lambda: sim.record.gpo == {1: False, 2: False, 3: True}, 3.0)
        assert len(sim.record.gpo_writes) > writes_before
        assert driver.frame_errors == 0
        assert "request_failed" not in driver.health.detail


async def test_a_gpo_port_the_reader_lacks_is_refused_at_connect() -> None:
    caps = f.Capabilities(gpos=2)
    async with LlrpSimulator(Scenario("empty", 60.0), capabilities=caps) as sim:
        with pytest.raises(ReaderRejectedConfig) as info:
            async with LlrpDriver("portal", "door-1", "127.0.0.1", sim.port, LIGHTS):
                pytest.fail("entered with a GPO port the reader lacks")
    assert "GPO port 3" in info.value.reason


async def test_a_gpi_port_the_reader_lacks_is_refused_at_connect() -> None:
    caps = f.Capabilities(gpis=0)
    settings = dataclasses.replace(FAST, trigger_gpi=1)
    async with LlrpSimulator(Scenario("empty", 60.0), capabilities=caps) as sim:
        with pytest.raises(ReaderRejectedConfig) as info:
            async with LlrpDriver("portal", "door-1", "127.0.0.1", sim.port, settings):
                pytest.fail("entered with a GPI port the reader lacks")
    assert "GPI port 1" in info.value.reason


async def test_gpi_from_the_scenario_and_the_api_reach_the_driver() -> None:
    scenario = Scenario("beam", 60.0, gpi=(GpiChange(0.3, 1, high=True),))
    async with LlrpSimulator(scenario) as sim:
        driver = LlrpDriver("portal", "door-1", "127.0.0.1", sim.port, FAST)
        async with driver:
            await drain(driver, 1.0)
            assert driver.health.detail.get("gpi_1") == "high"
            sim.set_gpi(1, high=False)
            await drain(driver, 0.5)
            assert driver.health.detail.get("gpi_1") == "low"
    assert [(c.port, c.high) for c in sim.record.gpi_changes] == [(1, True), (1, False)]


def parked_and_passing() -> Scenario:
    """One tag parked in view for the whole scenario, read ten times a second."""
    tag = ScenarioTag("300833B2DDD9014000000001", (Pass(0.0, 60.0, (1,), -50.0, 10.0),))
    return Scenario("parked", 60.0, (tag,))


async def count_reads(driver: LlrpDriver, seconds: float) -> int:
    """Tag reads the driver yields within `seconds`."""
    reads = 0
    try:
        async with asyncio.timeout(seconds):
            async for event in driver.events():
                if isinstance(event, TagRead):
                    reads += 1
    except TimeoutError:
        pass
    return reads


async def test_triggered_inventory_reads_only_while_the_beam_is_broken_and_lingers() -> None:
    settings = dataclasses.replace(FAST, trigger_gpi=1, trigger_linger_s=1.0)
    async with LlrpSimulator(parked_and_passing()) as sim:
        driver = LlrpDriver("portal", "door-1", "127.0.0.1", sim.port, settings)
        async with driver:
            spec = sim.record.last_rospec
            assert spec is not None
            assert spec.start_trigger == START_TRIGGER_GPI
            assert spec.start_gpi == (1, True)
            assert await count_reads(driver, 1.0) == 0  # beam low: the parked tag is not read
            assert driver.health.detail["inventory"] == "waiting for GPI 1"
            sim.set_gpi(1, high=True)
            assert await count_reads(driver, 1.0) > 0
            assert driver.health.detail["inventory"] == "on"
            sim.set_gpi(1, high=False)
            fell = time.monotonic()
            await count_reads(driver, 2.5)
            assert sim.record.rospec_stops_mono, "the inventory never stopped"
            assert sim.record.rospec_stops_mono[0] - fell < settings.trigger_linger_s + 1.0
            assert sim.record.rospec_stops_mono[0] - fell >= settings.trigger_linger_s - 0.05
            assert await count_reads(driver, 1.0) == 0
            # the start trigger stays armed: the next beam starts it again
            sim.set_gpi(1, high=True)
            assert await count_reads(driver, 1.0) > 0
            assert 1.5 < driver.inventory_s < 4.5


async def test_llrpkit_emulator_gpi_event_starts_inventory_and_sees_the_gpo_write() -> None:
    # An emulator nobody here wrote: its own GPI start trigger, GPIEvents and GPO register.
    tag = EmulatedTag(bytes.fromhex("300833B2DDD9014000000001"), (1,), -50.0)
    settings = dataclasses.replace(
        FAST, trigger_gpi=1, trigger_linger_s=0.5, gpo_ports=(1, 2, 3), report_every_n_tags=1
    )
    latch = GpoLatch("portal")
    emulator = CountingEmulator(tags=[tag], reads_per_sec=50.0, seed=3)
    async with emulator:
        driver = LlrpDriver("portal", "door-1", "127.0.0.1", emulator.port, settings, outputs=latch)
        async with driver:
            assert await count_reads(driver, 1.0) == 0  # beam low: the tag in view is not read
            assert emulator.reads_sent == 0
            await emulator.set_gpi(1, high=True)
            assert await count_reads(driver, 1.0) > 0
            assert driver.health.detail["gpi_1"] == "high"
            latch.set({1: True, 2: False, 3: False})
            # llrpkit keeps its GPO register private; it is the emulator's view of the light.
            await until(lambda: emulator._gpo_states[1], 3.0)
            await emulator.set_gpi(1, high=False)
            await count_reads(driver, 1.5)
            sent = emulator.reads_sent
            assert await count_reads(driver, 1.0) == 0
            assert emulator.reads_sent == sent, "the inventory went on after linger_s"
        assert "request_failed" not in driver.health.detail


async def test_gateway_started_inventory_for_readers_without_gpi_start_triggers() -> None:
    settings = dataclasses.replace(
        FAST, trigger_gpi=1, trigger_linger_s=0.5, trigger_by_gateway=True
    )
    async with LlrpSimulator(parked_and_passing()) as sim:
        driver = LlrpDriver("portal", "door-1", "127.0.0.1", sim.port, settings)
        async with driver:
            spec = sim.record.last_rospec
            assert spec is not None
            assert (spec.start_trigger, spec.start_gpi) == (0, None)  # Null: waits for us
            assert await count_reads(driver, 0.8) == 0
            sim.set_gpi(1, high=True)
            assert await count_reads(driver, 1.0) > 0
            sim.set_gpi(1, high=False)
            await count_reads(driver, 1.2)
            assert len(sim.record.rospec_stops_mono) == 1
            assert await count_reads(driver, 0.8) == 0
        assert "request_failed" not in driver.health.detail


async def test_a_beam_broken_before_the_connect_starts_the_inventory_at_once() -> None:
    settings = dataclasses.replace(FAST, trigger_gpi=1, trigger_linger_s=0.5)
    async with LlrpSimulator(parked_and_passing()) as sim:
        sim.set_gpi(1, high=True)  # no client yet: nobody sees the edge
        driver = LlrpDriver("portal", "door-1", "127.0.0.1", sim.port, settings)
        async with driver:
            assert driver.health.detail["inventory"] == "on"
            assert await count_reads(driver, 1.0) > 0
        assert "request_failed" not in driver.health.detail

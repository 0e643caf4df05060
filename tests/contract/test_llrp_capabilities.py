"""At connect, a profile is checked against the reader's own capabilities (LLRP simulator)."""

from __future__ import annotations

import asyncio

import pytest

from gateway.errors import ReaderRejectedConfig
from gateway.readers.llrp import frames as f
from gateway.readers.llrp.driver import LlrpDriver
from gateway.readers.llrp.scenario import returns_door_scenario
from gateway.readers.llrp.settings import LlrpSettings
from gateway.readers.llrp.simulator import LlrpSimulator


async def _enter(caps: f.Capabilities | None, settings: LlrpSettings) -> str:
    scenario = returns_door_scenario(items=4, pallets=1, strays=0, in_and_out=0)
    async with LlrpSimulator(scenario, port=0, capabilities=caps) as sim:
        driver = LlrpDriver("portal", "door-3", "127.0.0.1", sim.port, settings)
        async with asyncio.timeout(20):
            async with driver:
                return driver.health.state


@pytest.mark.parametrize(
    ("caps", "settings", "reason"),
    [
        (f.Capabilities(antennas=2), LlrpSettings(antennas=(1, 2, 3, 4)), "available=1,2"),
        (None, LlrpSettings(mode_identifier=77), "valid mode_identifiers are [0, 1, 2, 1002]"),
        (
            None,
            LlrpSettings(antennas=(1, 2), power_dbm_by_antenna=((1, 45.0), (2, 20.0))),
            "45.0 dBm is outside the reader's power table (10.0-30.0 dBm)",
        ),
    ],
    ids=["antenna-count", "rf-mode", "power-table"],
)
async def test_profile_outside_the_readers_capabilities_is_rejected(
    caps: f.Capabilities | None, settings: LlrpSettings, reason: str
) -> None:
    with pytest.raises(ReaderRejectedConfig) as info:
        await _enter(caps, settings)
    assert reason in info.value.reason


async def test_profile_within_the_capabilities_inventories() -> None:
    settings = LlrpSettings(antennas=(1, 2), power_dbm_by_antenna=((1, 27.1), (2, 20.0)))
    assert await _enter(None, settings) == "inventorying"

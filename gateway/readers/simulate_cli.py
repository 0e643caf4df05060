"""`gateway simulate reader`: the LLRP reader simulator on its own, until interrupted."""

from __future__ import annotations

import asyncio
from pathlib import Path

from gateway.errors import ConfigError
from gateway.logs import get_logger
from gateway.readers.llrp.scenario import Scenario, load_scenario, returns_door_scenario
from gateway.readers.llrp.simulator import LlrpSimulator

_log = get_logger("simulate")


def run_simulator(
    port: int, scenario_path: Path | None = None, *, host: str = "127.0.0.1", speed: float = 1.0
) -> int:
    """Serve LLRP on `port` playing the scenario (default: the returns door); exit code."""
    try:
        scenario = load_scenario(scenario_path) if scenario_path else returns_door_scenario()
    except ConfigError as err:
        _log.error("scenario_invalid", key=err.key, reason=err.reason)
        return 2
    try:
        asyncio.run(_serve(scenario, host, port, speed))
    except KeyboardInterrupt:
        return 0
    except OSError as err:
        _log.error("simulator_cannot_listen", host=host, port=port, reason=str(err))
        return 1
    return 0


async def _serve(scenario: Scenario, host: str, port: int, speed: float) -> None:
    async with LlrpSimulator(scenario, host=host, port=port, speed=speed) as sim:
        _log.info(
            "simulator_listening",
            host=host,
            port=sim.port,
            scenario=scenario.name,
            tags=len(scenario.tags),
            duration_s=scenario.duration_s,
        )
        await asyncio.Event().wait()

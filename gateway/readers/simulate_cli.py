"""`gateway simulate reader`: the LLRP reader simulator on its own, until interrupted.

It logs every GPO write (`simulator_gpo`: the stack light) and, with `--gpi-stdin`, sets GPIs
from lines typed on stdin (`1 high`: the beam on GPI 1 broken; `1 low`: clear again).
"""

from __future__ import annotations

import asyncio
import functools
import sys
import threading
from pathlib import Path

from gateway.errors import ConfigError
from gateway.logs import get_logger
from gateway.readers.llrp.scenario import Scenario, load_scenario, returns_door_scenario
from gateway.readers.llrp.simulator import LlrpSimulator

_log = get_logger("simulate")


def run_simulator(
    port: int,
    scenario_path: Path | None = None,
    *,
    host: str = "127.0.0.1",
    speed: float = 1.0,
    gpi_stdin: bool = False,
) -> int:
    """Serve LLRP on `port` playing the scenario (default: the returns door); exit code."""
    try:
        scenario = load_scenario(scenario_path) if scenario_path else returns_door_scenario()
    except ConfigError as err:
        _log.error("scenario_invalid", key=err.key, reason=err.reason)
        return 2
    try:
        asyncio.run(_serve(scenario, host, port, speed, gpi_stdin=gpi_stdin))
    except KeyboardInterrupt:
        return 0
    except OSError as err:
        _log.error("simulator_cannot_listen", host=host, port=port, reason=str(err))
        return 1
    return 0


def parse_gpi_line(line: str) -> tuple[int, bool] | None:
    """`"1 high"` -> (1, True), `"2 low"` -> (2, False); None for anything else."""
    parts = line.split()
    levels = {"high": True, "low": False, "1": True, "0": False}
    if len(parts) != 2 or not parts[0].isdigit() or parts[1].lower() not in levels:
        return None
    return int(parts[0]), levels[parts[1].lower()]


async def _serve(
    scenario: Scenario, host: str, port: int, speed: float, *, gpi_stdin: bool
) -> None:
    async with LlrpSimulator(scenario, host=host, port=port, speed=speed) as sim:
        sim.on_gpo = lambda gpo, high: _log.info("simulator_gpo", port=gpo, high=high)
        _log.info(
            "simulator_listening",
            host=host,
            port=sim.port,
            scenario=scenario.name,
            tags=len(scenario.tags),
            duration_s=scenario.duration_s,
        )
        if gpi_stdin:
            _read_gpi_lines(sim, asyncio.get_running_loop())
        await asyncio.Event().wait()


def _read_gpi_lines(sim: LlrpSimulator, loop: asyncio.AbstractEventLoop) -> None:
    """Read GPI lines on a daemon thread (stdin blocks); each is applied on the loop."""

    def read() -> None:
        for line in sys.stdin:
            parsed = parse_gpi_line(line)
            if parsed is None:
                _log.warning("gpi_line_ignored", line=line.strip(), expected="PORT high|low")
                continue
            try:
                loop.call_soon_threadsafe(functools.partial(sim.set_gpi, parsed[0], high=parsed[1]))
            except RuntimeError:
                return  # the loop has closed

    threading.Thread(target=read, name="simulator-gpi-stdin", daemon=True).start()

"""The verdict shown at each door: decided after movements commit, lit on GPOs, published."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass

from gateway.config import Config
from gateway.daemon.shared import LOG_COMPONENT
from gateway.domain.feedback import VERDICTS, Light, Verdict, verdicts
from gateway.domain.movements import Movement
from gateway.domain.wire import rfc3339
from gateway.logs import get_logger
from gateway.readers.llrp.gpio import GpoLatch

_log = get_logger(LOG_COMPONENT)
FEEDBACK_SCHEMA = "dock-gateway/feedback/1"
# A station without lights still publishes its verdict, held this long.
DEFAULT_HOLD_S = 4.0


@dataclass(frozen=True, slots=True)
class _StationLights:
    latch: GpoLatch
    ports: Mapping[Verdict, int]


class DockFeedback:
    """Owns what each station shows: `committed()` after a commit, `run()` turns lights off."""

    def __init__(
        self,
        config: Config,
        latches: Mapping[str, GpoLatch],
        *,
        publish: Callable[[str, bytes], Awaitable[None]],
        monotonic: Callable[[], float],
        clock: Callable[[], float],
    ) -> None:
        self._publish = publish
        self._monotonic = monotonic
        self._clock = clock
        self._lights: dict[str, Light] = {}
        self._outputs: dict[str, _StationLights] = {}
        for station in config.stations:
            lights = station.lights
            self._lights[station.id] = Light(lights.hold_s if lights else DEFAULT_HOLD_S)
            if lights is not None:
                ports: dict[Verdict, int] = {
                    "expected": lights.expected,
                    "unexpected": lights.unexpected,
                    "problem": lights.problem,
                }
                self._outputs[station.id] = _StationLights(latches[lights.reader], ports)
        self._latches = dict(latches)
        self._shown: dict[str, Verdict | None] = dict.fromkeys(self._lights)
        self._changed = asyncio.Event()
        self.verdicts_shown = dict.fromkeys(VERDICTS, 0)

    @staticmethod
    def latches(config: Config) -> dict[str, GpoLatch]:
        """One output latch per LLRP reader that station lights drive."""
        return {s.lights.reader: GpoLatch(s.lights.reader) for s in config.stations if s.lights}

    def latch(self, reader: str) -> GpoLatch | None:
        """The output latch of a reader that lights drive (None: no lights on it)."""
        return self._latches.get(reader)

    def shown(self, station: str) -> Verdict | None:
        """The verdict the station shows now (None: off)."""
        return self._shown.get(station)

    async def committed(
        self, movements: Iterable[Movement], reversed_at: Iterable[str] = ()
    ) -> None:
        """Movements (and reversed passages) just committed: light what they say."""
        now_s = self._monotonic()
        decided = verdicts(movements, reversed_at)
        for station, verdict in decided.items():
            light = self._lights.get(station)
            if light is None:
                continue
            light.show(verdict, now_s)
            self.verdicts_shown[verdict] += 1
        if decided:
            await self._apply(now_s)
            self._changed.set()

    async def run(self) -> None:
        """Turn lights off (or down to a lesser verdict) as their hold runs out, forever."""
        while True:
            now_s = self._monotonic()
            due = [t for light in self._lights.values() if (t := light.next_change_s(now_s))]
            self._changed.clear()
            if due:
                delay_s = max(0.0, min(due) - now_s)
                try:
                    async with asyncio.timeout(delay_s):
                        await self._changed.wait()
                except TimeoutError:
                    pass
            else:
                await self._changed.wait()
            await self._apply(self._monotonic())

    async def _apply(self, now_s: float) -> None:
        for station, light in self._lights.items():
            verdict = light.current(now_s)
            if verdict == self._shown[station]:
                continue
            self._shown[station] = verdict
            outputs = self._outputs.get(station)
            if outputs is not None:
                outputs.latch.set({port: v == verdict for v, port in outputs.ports.items()})
            body = {
                "schema": FEEDBACK_SCHEMA,
                "station": station,
                "verdict": verdict,
                "hold_s": light.hold_s,
                "at": rfc3339(self._clock()),
            }
            await self._publish(station, json.dumps(body, separators=(",", ":")).encode())
            _log.info("feedback_shown", station=station, verdict=verdict)

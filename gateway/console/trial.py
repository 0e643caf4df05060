"""A/B trial of two profiles on one reader: alternate them, measure each phase, compare.

A technician starts a trial from a reader's tuning page: profile A, then B, then A again, … for
`rounds` rounds of `phase_s` each, every switch through the daemon's own apply (checks, rollback,
history, `source = "console-trial"`). Phases interleave so that a busy quarter of an hour does not
favour one profile. Each phase counts, for that reader only: reads per second per antenna, mean
RSSI per antenna, crossings (visits with a direction) per minute and their direction confidence,
and reads of parked tags per second. When the trial ends, or is stopped, the profile that was in
force before it is applied again: the trial never leaves the reader on a profile nobody chose.
`compare` is pure and states its verdict with the figures behind it; keeping A or B is a click.
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from gateway.console.source import ConsoleSource
from gateway.console.tuning import CROSSING_DIRECTIONS, crossed_items, split_tags
from gateway.errors import InputError
from gateway.logs import get_logger
from gateway.profiles import Profile

_log = get_logger("console")
PHASE_MIN_S = 2.0
PHASE_MAX_S = 3600.0
ROUNDS_MAX = 12
_SAMPLE_S = 2.0  # how often a phase gathers the recent visits (the activity list is bounded)
_VISITS_MAX = 100_000


@dataclass(frozen=True, slots=True)
class PhaseResult:
    """What one phase of one profile measured on the reader."""

    profile: str  # "A" or "B"
    name: str
    started_s: float
    ended_s: float
    reads_per_s: dict[str, float]
    rssi_dbm: dict[str, float | None]
    crossings: int
    confidence: float | None
    parked_tags: int
    parked_reads: int

    @property
    def minutes(self) -> float:
        """The phase's length in minutes."""
        return max(self.ended_s - self.started_s, 1e-9) / 60.0


@dataclass(slots=True)
class TrialState:
    """The trial the page shows: plan, progress, phases measured, outcome."""

    reader: str
    a: str
    b: str
    phase_s: float
    rounds: int
    requested_by: str
    client: str | None = None
    state: str = "starting"  # starting, running, restoring, done, stopped, failed
    phase: str | None = None
    phase_ends_s: float | None = None
    reason: str | None = None
    restored: str | None = None
    phases: list[PhaseResult] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        """The page's view of the trial, with the comparison so far."""
        body = {k: v for k, v in asdict(self).items() if k != "phases"}
        body["phases"] = [asdict(p) for p in self.phases]
        body["comparison"] = compare(self.phases, self.a, self.b)
        return body


def compare(phases: Sequence[PhaseResult], a_name: str, b_name: str) -> dict[str, Any]:
    """Totals per profile and a verdict that names its evidence (pure)."""
    totals = {label: _totals([p for p in phases if p.profile == label]) for label in ("A", "B")}
    a, b = totals["A"], totals["B"]
    if a is None or b is None:
        return {"A": a, "B": b, "verdict": "not yet: each profile needs a phase", "evidence": []}
    evidence = [
        (
            f"crossings per minute: A {a['crossings_per_min']:.1f}, "
            f"B {b['crossings_per_min']:.1f} ({a['crossings']} and {b['crossings']} visits "
            "with a direction)"
        ),
        (
            f"parked-tag reads per second: A {a['parked_reads_per_s']:.1f}, "
            f"B {b['parked_reads_per_s']:.1f}"
        ),
        f"reads per second (all antennas): A {a['reads_per_s']:.1f}, B {b['reads_per_s']:.1f}",
    ]
    if a["confidence"] is not None and b["confidence"] is not None:
        evidence.append(
            f"mean direction confidence: A {a['confidence']:.2f}, B {b['confidence']:.2f}"
        )
    more = _better(b["crossings_per_min"], a["crossings_per_min"], higher=True)
    quieter = _better(b["parked_reads_per_s"], a["parked_reads_per_s"], higher=False)
    if more > 0 and quieter >= 0:
        verdict = f"B ({b_name}) did better: more crossings, no more parked reads"
    elif more < 0 and quieter <= 0:
        verdict = f"A ({a_name}) did better: more crossings, no more parked reads"
    elif more == 0 and quieter > 0:
        verdict = f"B ({b_name}) did as well on crossings with fewer parked reads"
    elif more == 0 and quieter < 0:
        verdict = f"A ({a_name}) did as well on crossings with fewer parked reads"
    elif more == 0 and quieter == 0:
        verdict = "no clear difference: run longer phases or more rounds"
    else:
        verdict = "a trade-off: one finds more crossings, the other reads parked tags less"
    return {"A": a, "B": b, "verdict": verdict, "evidence": evidence}


class Trial:
    """Runs one A/B trial at a time against the daemon's apply; `state` is what the page shows."""

    def __init__(self, source: ConsoleSource, *, clock: Callable[[], float] = time.time) -> None:
        self._source = source
        self._clock = clock
        self._task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()
        self.state: TrialState | None = None

    @property
    def running(self) -> bool:
        """Whether a trial is under way."""
        return self._task is not None and not self._task.done()

    def start(
        self,
        reader: str,
        a: Profile,
        b: Profile,
        *,
        phase_s: float,
        rounds: int,
        requested_by: str,
        client: str | None,
        parked_after_s: float,
    ) -> TrialState:
        """Start a trial in the background; InputError if one runs or the plan is unfit."""
        if self.running:
            raise InputError("trial", "a trial is running: stop it first")
        original = self._source.profiles_in_force().get(reader)
        if original is None:
            raise InputError("trial", f"no LLRP reader {reader[:64]!r} with a profile in force")
        if not PHASE_MIN_S <= phase_s <= PHASE_MAX_S:
            raise InputError("trial", f"phase_s must be {PHASE_MIN_S:g}-{PHASE_MAX_S:g} s")
        if not 1 <= rounds <= ROUNDS_MAX:
            raise InputError("trial", f"rounds must be 1-{ROUNDS_MAX}")
        if a == b:
            raise InputError("trial", "A and B are the same profile")
        self.state = TrialState(
            reader,
            f"{a.name} v{a.version}",
            f"{b.name} v{b.version}",
            phase_s,
            rounds,
            requested_by,
            client,
        )
        self._stop = asyncio.Event()
        self._task = asyncio.create_task(
            self._run(self.state, original, a, b, parked_after_s), name="console-trial"
        )
        return self.state

    def stop(self) -> bool:
        """Ask the running trial to end now (it restores the original profile); False if none."""
        if not self.running:
            return False
        self._stop.set()
        return True

    async def close(self) -> None:
        """Cancel a running trial (the server is stopping)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(
        self,
        state: TrialState,
        original: Profile,
        a: Profile,
        b: Profile,
        parked_after_s: float,
    ) -> None:
        try:
            state.state = "running"
            for _ in range(state.rounds):
                for label, profile in (("A", a), ("B", b)):
                    if self._stop.is_set():
                        break
                    failed = await self._apply(state, profile)
                    if failed is not None:
                        state.state, state.reason = "failed", failed
                        break
                    result = await self._phase(state, label, profile, parked_after_s)
                    state.phases.append(result)
                if state.state == "failed" or self._stop.is_set():
                    break
        finally:
            state.phase = state.phase_ends_s = None
        final = "stopped" if self._stop.is_set() else state.state
        state.state = "restoring"
        restored = None
        if self._source.profiles_in_force().get(state.reader) != original:
            # B was the profile in force already, or nothing got applied: no needless restart.
            restored = await self._apply(state, original)
        state.restored = None if restored is not None else f"{original.name} v{original.version}"
        if restored is not None:
            state.reason = (state.reason + "; " if state.reason else "") + restored
        state.state = "done" if final == "running" else final
        _log.info(
            "console_trial_ended", reader=state.reader, state=state.state, a=state.a, b=state.b
        )

    async def _apply(self, state: TrialState, profile: Profile) -> str | None:
        try:
            result = await self._source.apply_profile(
                {
                    "reader": state.reader,
                    "profile": profile.model_dump(mode="json"),
                    "requested_by": state.requested_by,
                    "source": "console-trial",
                    "client": state.client,
                }
            )
        except InputError as exc:
            return exc.reason
        if result.get("ok"):
            return None
        return (
            f"{profile.name} v{profile.version}: {result.get('outcome')} ({result.get('reason')})"
        )

    async def _phase(
        self, state: TrialState, label: str, profile: Profile, parked_after_s: float
    ) -> PhaseResult:
        tags = self._source.tags
        reader = state.reader
        started = self._clock()
        state.phase, state.phase_ends_s = label, started + state.phase_s
        reads_before = _reads_by_port(tags.reads_by_antenna, reader)
        tag_reads_before = _tag_reads(self._source, reader)
        visits: dict[tuple[str, float], float | None] = {}
        while True:
            _gather_visits(self._source.activity.entries(), reader, started, visits)
            left = started + state.phase_s - self._clock()
            if left <= 0:
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), timeout=min(_SAMPLE_S, left))
            if self._stop.is_set():
                break
        ended = self._clock()
        _gather_visits(self._source.activity.entries(), reader, started, visits)
        elapsed = max(ended - started, 1e-9)
        reads_after = _reads_by_port(tags.reads_by_antenna, reader)
        split = split_tags(
            reader, tags.all(), crossed_items(self._source.activity.entries()), parked_after_s
        )
        tag_reads_after = _tag_reads(self._source, reader)
        parked_reads = sum(
            tag_reads_after.get(t.epc_hex, 0) - tag_reads_before.get(t.epc_hex, 0)
            for t in split.parked
        )
        series = tags.history.series(reader, ended, window_s=elapsed)
        confidences = [c for c in visits.values() if c is not None]
        return PhaseResult(
            profile=label,
            name=f"{profile.name} v{profile.version}",
            started_s=started,
            ended_s=ended,
            reads_per_s={
                str(port): round(
                    (reads_after.get(port, 0) - reads_before.get(port, 0)) / elapsed, 2
                )
                for port in sorted(reads_after)
            },
            rssi_dbm={
                str(port): _mean([r for r in s["rssi_dbm"] if r is not None])
                for port, s in series.items()
            },
            crossings=len(visits),
            confidence=_mean(confidences),
            parked_tags=len(split.parked),
            parked_reads=max(parked_reads, 0),
        )


def _totals(phases: Sequence[PhaseResult]) -> dict[str, Any] | None:
    if not phases:
        return None
    minutes = sum(p.minutes for p in phases)
    crossings = sum(p.crossings for p in phases)
    confidences = [p.confidence for p in phases if p.confidence is not None]
    reads = sum(sum(p.reads_per_s.values()) * p.minutes for p in phases) / minutes
    return {
        "phases": len(phases),
        "minutes": round(minutes, 2),
        "crossings": crossings,
        "crossings_per_min": round(crossings / minutes, 2),
        "confidence": _mean(confidences),
        "parked_reads_per_s": round(sum(p.parked_reads for p in phases) / (minutes * 60), 2),
        "reads_per_s": round(reads, 2),
    }


def _better(b: float, a: float, *, higher: bool) -> int:
    """+1 if B is better than A by more than 10 % (and 0.1 absolute), -1 if worse, else 0."""
    if abs(b - a) <= max(0.1, 0.1 * max(abs(a), abs(b))):
        return 0
    return 1 if (b > a) == higher else -1


def _mean(values: Sequence[float]) -> float | None:
    return round(statistics.fmean(values), 2) if values else None


def _reads_by_port(reads: Mapping[tuple[str, int], int], reader: str) -> dict[int, int]:
    return {port: n for (rid, port), n in reads.items() if rid == reader}


def _tag_reads(source: ConsoleSource, reader: str) -> dict[str, int]:
    return {
        tag.epc_hex: sum(n for (rid, _), n in tag.antennas.items() if rid == reader)
        for tag in source.tags.all()
    }


def _gather_visits(
    entries: Sequence[Mapping[str, Any]],
    reader: str,
    since_s: float,
    into: dict[tuple[str, float], float | None],
) -> None:
    for e in entries:
        if (
            e.get("reader") == reader
            and e.get("direction") in CROSSING_DIRECTIONS
            and float(e.get("at_s") or 0.0) >= since_s
            and len(into) < _VISITS_MAX
        ):
            confidence = e.get("confidence")
            into[(str(e.get("item")), float(e["at_s"]))] = (
                float(confidence) if isinstance(confidence, int | float) else None
            )

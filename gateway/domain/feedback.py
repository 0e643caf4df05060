"""The verdict shown at a door: expected, unexpected or problem, from committed movements.

Pure: the daemon hands in what it committed and the time; nothing here knows of readers or MQTT.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Final, Literal

from gateway.domain.movements import Movement

Verdict = Literal["expected", "unexpected", "problem"]
VERDICTS: Final[tuple[Verdict, ...]] = ("expected", "unexpected", "problem")
# Worse verdicts rank higher: one light at a time, the worst one shows.
_RANK: Final[Mapping[Verdict, int]] = {"expected": 0, "unexpected": 1, "problem": 2}
# Movement flags that mean the receipt is not what the returns desk wanted: the item was already
# received for its RMA, or its line (or the whole RMA) had every unit announced already.
PROBLEM_FLAGS: Final = frozenset({"duplicate", "surplus"})


def verdicts(movements: Iterable[Movement], reversed_at: Iterable[str] = ()) -> dict[str, Verdict]:
    """The verdict per station of one commit's receipts; a reversed passage there is a problem.

    `reversed_at` names the stations where a passage went in and back out (no receipt stood).
    Stations with neither a receipt nor a reversal get no verdict.
    """
    out: dict[str, Verdict] = {}
    for movement in movements:
        if movement.type != "receipt":
            continue
        if PROBLEM_FLAGS.intersection(movement.flags):
            verdict: Verdict = "problem"
        elif movement.expected:
            verdict = "expected"
        else:
            verdict = "unexpected"
        out[movement.station] = worst(out.get(movement.station), verdict)
    for station in reversed_at:
        out[station] = "problem"
    return out


def worst(a: Verdict | None, b: Verdict) -> Verdict:
    """The worse of two verdicts."""
    if a is None or _RANK[b] > _RANK[a]:
        return b
    return a


@dataclass(slots=True)
class Light:
    """One station's stack light: each verdict lights for `hold_s`; the worst lit one shows."""

    hold_s: float
    _until_s: dict[Verdict, float] = field(default_factory=dict)

    def show(self, verdict: Verdict, now_s: float) -> None:
        """Light `verdict` from `now_s` for `hold_s` (again, if it was lit already)."""
        self._until_s[verdict] = now_s + self.hold_s

    def current(self, now_s: float) -> Verdict | None:
        """The verdict shown at `now_s`, or None when the light is off."""
        shown: Verdict | None = None
        for verdict, until_s in self._until_s.items():
            if until_s > now_s:
                shown = worst(shown, verdict)
        return shown

    def next_change_s(self, now_s: float) -> float | None:
        """When the shown verdict may change next without a new one, or None if nothing is lit."""
        pending = [until_s for until_s in self._until_s.values() if until_s > now_s]
        return min(pending) if pending else None

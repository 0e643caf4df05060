"""One fake clock for the tests: it reads `now_s`, which the test sets, or steps on each read."""

from __future__ import annotations

DEFAULT_START_S = 1_795_000_000.0  # 2026-11-18, a plausible wall clock for the dock


class FakeClock:
    """A `() -> float` clock: returns `now_s`, first adding `step_s` (0 keeps it still)."""

    def __init__(self, now_s: float = DEFAULT_START_S, *, step_s: float = 0.0) -> None:
        self.now_s = now_s
        self.step_s = step_s

    def __call__(self) -> float:
        """The time now, after moving on by `step_s`."""
        self.now_s += self.step_s
        return self.now_s

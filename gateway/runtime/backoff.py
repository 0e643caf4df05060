"""Capped, jittered exponential backoff as a pure function, so tests need no sleeps."""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Backoff:
    """Delay before retry `attempt` (0-based): jitter over min(max_s, min_s * factor**attempt)."""

    min_s: float = 0.5
    max_s: float = 30.0
    factor: float = 2.0
    jitter: float = 0.5

    def delay_s(self, attempt: int, rng: random.Random | None = None) -> float:
        """The delay for this attempt; never below `min_s * (1 - jitter)`, never above `max_s`."""
        ceiling = min(self.max_s, self.min_s * (self.factor ** min(attempt, 64)))
        draw = (rng or _RNG).random()
        return max(self.min_s * (1 - self.jitter), ceiling * (1 - self.jitter * draw))


_RNG = random.Random()  # noqa: S311 - jitter, not cryptography

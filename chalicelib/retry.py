"""Backoff policy: exponential, capped, full jitter.

Full jitter (delay drawn uniformly from [0, min(cap, base * 2**(attempt-1))])
spreads a burst of failures out instead of retrying them in lockstep.
"""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 5
    base: float = 1.0
    cap: float = 300.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if self.base < 0 or self.cap < 0:
            raise ValueError("base and cap must be non-negative")

    def ceiling(self, attempt: int) -> float:
        """The largest delay the jitter may pick after failed attempt number `attempt`."""
        exponent = max(0, attempt - 1)
        # Cap the exponent too, so a huge attempt number cannot overflow a float.
        return float(min(self.cap, self.base * (2.0 ** min(exponent, 62))))

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        draw = (rng or _rng).random()
        return draw * self.ceiling(attempt)

    def exhausted(self, attempts: int) -> bool:
        return attempts >= self.max_attempts


_rng = random.Random()

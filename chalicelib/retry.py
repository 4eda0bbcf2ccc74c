"""Backoff policy: exponential, capped, full jitter.

Full jitter (delay drawn uniformly from [0, min(cap, base * 2**(attempt-1))])
spreads a burst of failures out instead of retrying them in lockstep.
"""

from __future__ import annotations

import math
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
        for name, value in (("base", self.base), ("cap", self.cap)):
            # NaN passed `< 0` and then every delay was NaN; infinity overflowed the
            # retry's datetime in the pool thread (the worker died with the job running).
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"backoff {name} must be a number of seconds, not {value!r}")
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"backoff {name} must be a finite, non-negative number of seconds")

    def ceiling(self, attempt: int) -> float:
        """The largest delay the jitter may pick after failed attempt number `attempt`."""
        exponent = max(0, attempt - 1)
        try:
            # base * 2**exponent, exactly; capping the exponent instead (at 62) left a
            # tiny base's ceiling short of the cap however many attempts failed.
            grown = math.ldexp(self.base, exponent)
        except OverflowError:  # past the largest float, so past any cap
            return float(self.cap)
        return float(min(self.cap, grown))

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        draw = (rng or _rng).random()
        return draw * self.ceiling(attempt)

    def exhausted(self, attempts: int) -> bool:
        return attempts >= self.max_attempts


_rng = random.Random()

"""Backoff policy: exponential, capped, full jitter.

Full jitter (delay drawn uniformly from [0, min(cap, base * 2**(attempt-1))])
spreads a burst of failures out instead of retrying them in lockstep.
"""

from __future__ import annotations

import math
import numbers
import operator
import random
import reprlib  # a value in a message: 10**400 is not 401 digits long
from dataclasses import dataclass

# The most attempts a job may have: a client's max_attempts has this bound
# (service.EnqueueRequest), and so does a handler's default, which every job of its
# type gets (2**31 was out of range for Postgres, 2**63 for SQLite: every enqueue
# of that type failed there and not on the memory store).
MAX_ATTEMPTS = 100


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 5
    base: float = 1.0
    cap: float = 300.0

    def __post_init__(self) -> None:
        # A RetryPolicy given as `backoff=` skips the decorator's own check: 2.5 was
        # stored as 2.5 on SQLite (2 on Postgres), True as 1.
        try:
            if isinstance(self.max_attempts, bool):
                raise TypeError
            attempts = operator.index(self.max_attempts)  # int, IntEnum, numpy's ints
        except TypeError:
            raise ValueError(
                f"max_attempts must be a whole number, not {reprlib.repr(self.max_attempts)}"
            ) from None
        object.__setattr__(self, "max_attempts", attempts)  # a plain int, for every store
        if attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if attempts > MAX_ATTEMPTS:
            raise ValueError(
                f"max_attempts must be at most {MAX_ATTEMPTS}, not {reprlib.repr(attempts)}"
            )
        for name, value in (("base", self.base), ("cap", self.cap)):
            # NaN passed `< 0` and then every delay was NaN; infinity overflowed the
            # retry's datetime in the pool thread (the worker died with the job running).
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(
                    f"backoff {name} must be a number of seconds, not {reprlib.repr(value)}"
                )
            if not finite(value) or value < 0:
                raise ValueError(f"backoff {name} must be a finite, non-negative number of seconds")
        if self.base > self.cap:
            # (600, 5) read as "start at 600 s, at most 5 s": every retry waited up to
            # the cap, so the base meant nothing. Usually the pair given the wrong way round.
            raise ValueError(
                f"backoff base {self.base:g}s is more than its cap {self.cap:g}s: the base is "
                "the first retry's longest wait and the cap every retry's; give (base, cap) "
                "with base <= cap"
            )

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


def retry_after_seconds(value: object) -> float:
    """A handler's RetryAfter(seconds) as a float, or TypeError/ValueError saying why not.

    Refused when RetryAfter is raised, where the handler's traceback points at the
    mistake: "30" (a header's text) used to fail inside the worker and was retried
    with the backoff, logged as Spool's own error; None silently meant the backoff,
    True one second and NaN no wait at all. A negative number means at once (a time
    already past, as a client's run_at); one past the bound, or an int too large for
    a float, waits the bound (the worker clamps it: timebounds.clamp_delay).
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        hint = " (convert it: float(text))" if isinstance(value, str | bytes) else ""
        hint = " (pass delay.total_seconds())" if hasattr(value, "total_seconds") else hint
        raise TypeError(
            f"RetryAfter takes a number of seconds, not {reprlib.repr(value)} "
            f"({type(value).__name__}){hint}"
        )
    try:
        seconds = float(value)
    except OverflowError:  # 10**400: past the largest float, so past any bound
        return math.inf
    if math.isnan(seconds):
        raise ValueError("RetryAfter takes a number of seconds, not NaN")
    return seconds


def finite(value: float) -> bool:
    """math.isfinite, with an int too large for a float (10**400) not finite rather
    than an OverflowError."""
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


_rng = random.Random()

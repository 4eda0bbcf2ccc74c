"""How far ahead anything may be scheduled, and times that cannot overflow.

One bound for every way of asking for a later run: a client's `delay`, a
client's `run_at`, and a handler's RetryAfter. Python datetimes end at year
9999, so an unbounded "later" (run_at 9999-12-31T23:59:59-14:00 is 10000-01-01
in UTC, a delay of 1e12 seconds) raises OverflowError somewhere below; with the
bound checked first, every time Spool computes stays far inside the range.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

MAX_DELAY_SECONDS = 366 * 24 * 3600
MAX_DELAY = timedelta(seconds=MAX_DELAY_SECONDS)
BOUND_TEXT = f"at most 366 days ({MAX_DELAY_SECONDS} s) ahead"


def to_utc(value: datetime) -> datetime:
    """The same instant in UTC; ValueError (not OverflowError) when UTC cannot hold it.

    0001-01-01T00:00:00+14:00 is in year 0 in UTC and 9999-12-31T23:59:59-14:00
    in year 10000: neither exists as a Python datetime.
    """
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise ValueError(
            "is outside the range of times Spool can represent (years 1 to 9999 in UTC)"
        ) from None


def clamp_delay(seconds: float) -> float:
    """A delay in [0, MAX_DELAY_SECONDS]; NaN counts as no delay."""
    if math.isnan(seconds) or seconds <= 0:
        return 0.0
    return min(float(seconds), float(MAX_DELAY_SECONDS))

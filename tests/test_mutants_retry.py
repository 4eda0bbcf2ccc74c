"""chalicelib/retry.py's backoff ceiling, exactly as docs/handlers.md states it.

Written for the mutant `make mutation MUTANTS='chalicelib.retry*'` left alive
(docs/testing.md): the exponent was capped at 62, and moving that cap changed no
test. docs/testing.md counted it equivalent in practice, and it nearly was: a base
below cap / 2**62 never reached its cap, which within the 366-day delay bound
takes a base of a few picoseconds. The ceiling is now exact instead: after failed
attempt n it is min(cap, base * 2**(n-1)), for every attempt number and every
finite base and cap, worked out here in exact arithmetic.
"""

from __future__ import annotations

import random
from fractions import Fraction

import pytest

from chalicelib.retry import RetryPolicy


def documented(policy: RetryPolicy, attempt: int) -> float:
    """min(cap, base * 2**(attempt-1)), an attempt of 0 or below counting as 1."""
    grown = Fraction(policy.base) * 2 ** max(0, attempt - 1)
    return float(min(Fraction(policy.cap), grown))


@pytest.mark.parametrize(
    ("base", "cap"),
    [(1.0, 300.0), (0.5, 6.0), (2.0**-70, 1.0), (5e-324, 1.0), (1e-12, 366 * 86400.0), (0.0, 9.0)],
    ids=["default", "half-second", "tiny-base", "smallest-float", "picosecond", "zero-base"],
)
def test_the_ceiling_is_the_documented_formula_for_every_attempt(base: float, cap: float) -> None:
    policy = RetryPolicy(base=base, cap=cap)
    for attempt in range(-2, 1200):
        assert policy.ceiling(attempt) == documented(policy, attempt), attempt


def test_a_tiny_base_keeps_doubling_past_the_62nd_attempt_until_the_cap() -> None:
    policy = RetryPolicy(base=2.0**-70, cap=1.0)
    assert [policy.ceiling(n) for n in (63, 64, 65, 70, 71, 72)] == [
        2.0**-8,
        2.0**-7,
        2.0**-6,
        2.0**-1,
        1.0,
        1.0,
    ]
    rng = random.Random(7)
    draws = [policy.delay(100, rng) for _ in range(200)]
    assert max(draws) > 0.5  # drawn from [0, 1], not from [0, 2**-8]
    assert all(0.0 <= d <= 1.0 for d in draws)


@pytest.mark.parametrize("attempt", [2100, 10**6, 10**30], ids=["past-float", "million", "1e30"])
def test_attempt_numbers_past_any_float_give_the_cap(attempt: int) -> None:
    assert RetryPolicy(base=1.0, cap=300.0).ceiling(attempt) == 300.0
    assert RetryPolicy(base=5e-324, cap=2.5).ceiling(attempt) == 2.5
    assert RetryPolicy(base=0.0, cap=2.5).ceiling(attempt) == 0.0
    assert isinstance(RetryPolicy(base=1, cap=3).ceiling(attempt), float)

"""The backoff policy: exponential, capped, full jitter."""

from __future__ import annotations

import random

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from chalicelib.retry import RetryPolicy


def test_ceiling_doubles_from_base_until_the_cap() -> None:
    policy = RetryPolicy(base=0.5, cap=6.0)
    assert [policy.ceiling(a) for a in range(1, 7)] == [0.5, 1.0, 2.0, 4.0, 6.0, 6.0]


def test_attempt_zero_or_below_uses_the_base() -> None:
    assert RetryPolicy(base=3.0, cap=100.0).ceiling(0) == 3.0


def test_huge_attempt_numbers_do_not_overflow() -> None:
    policy = RetryPolicy(base=1.0, cap=300.0)
    assert policy.ceiling(10_000) == 300.0
    assert 0 <= policy.delay(10_000) <= 300.0


@given(
    attempt=st.integers(min_value=1, max_value=200),
    base=st.floats(min_value=0, max_value=100, allow_nan=False),
    cap=st.floats(min_value=0, max_value=10_000, allow_nan=False),
    seed=st.integers(min_value=0, max_value=2**32),
)
def test_delay_is_within_zero_and_the_ceiling(attempt: int, base: float, cap: float, seed: int):
    assume(base <= cap)  # a base above its cap is refused (test_a_base_above_its_cap...)
    policy = RetryPolicy(base=base, cap=cap)
    delay = policy.delay(attempt, random.Random(seed))
    assert 0 <= delay <= policy.ceiling(attempt) <= cap


def test_full_jitter_spreads_delays_over_the_whole_range() -> None:
    policy = RetryPolicy(base=1.0, cap=1000.0)
    rng = random.Random(1)
    draws = [policy.delay(5, rng) for _ in range(2000)]  # ceiling 16
    assert min(draws) < 1.0 and max(draws) > 15.0
    assert 7.0 < sum(draws) / len(draws) < 9.0  # uniform on [0, 16]: mean 8


def test_seeded_rng_makes_delays_reproducible() -> None:
    policy = RetryPolicy()
    a = [policy.delay(n, random.Random(42)) for n in range(1, 6)]
    b = [policy.delay(n, random.Random(42)) for n in range(1, 6)]
    assert a == b


def test_exhausted_after_max_attempts() -> None:
    policy = RetryPolicy(max_attempts=3)
    assert [policy.exhausted(n) for n in range(5)] == [False, False, False, True, True]


@pytest.mark.parametrize("kwargs", [{"max_attempts": 0}, {"base": -1.0}, {"cap": -0.5}], ids=str)
def test_invalid_policies_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        RetryPolicy(**kwargs)  # type: ignore[arg-type]

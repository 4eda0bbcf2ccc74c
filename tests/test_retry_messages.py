"""What a handler author is told when a backoff policy is impossible.

Written to kill the mutants `make mutation MUTANTS='chalicelib.retry*'` left alive
(docs/testing.md): the refusals were tested, their explanations were not.
"""

from __future__ import annotations

import re

import pytest

from chalicelib.retry import RetryPolicy


def refused(message: str) -> pytest.RaisesExc[ValueError]:
    """A ValueError with exactly this message, not one that merely contains it."""
    return pytest.raises(ValueError, match=f"^{re.escape(message)}$")


@pytest.mark.parametrize("attempts", [0, -1])
def test_too_few_attempts_are_refused_saying_why(attempts: int) -> None:
    with refused("max_attempts must be at least 1"):
        RetryPolicy(max_attempts=attempts)


@pytest.mark.parametrize(
    ("base", "cap", "name"),
    [(-1.0, 10.0, "base"), (1.0, -0.5, "cap"), (float("nan"), 1.0, "base"), (1.0, 1e999, "cap")],
)
def test_negative_or_infinite_delays_are_refused_saying_why(
    base: float, cap: float, name: str
) -> None:
    with refused(f"backoff {name} must be a finite, non-negative number of seconds"):
        RetryPolicy(base=base, cap=cap)

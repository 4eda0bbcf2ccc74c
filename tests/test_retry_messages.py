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


@pytest.mark.parametrize(("base", "cap"), [(-1.0, 10.0), (1.0, -0.5)])
def test_negative_delays_are_refused_saying_why(base: float, cap: float) -> None:
    with refused("base and cap must be non-negative"):
        RetryPolicy(base=base, cap=cap)

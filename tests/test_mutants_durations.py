"""chalicelib/durations.py at its edges: what `make mutation` found untested.

Written to kill the mutants `make mutation MUTANTS='chalicelib.durations*'` left
alive (docs/testing.md): the bounds themselves (zero, under a second, exactly the
longest allowed) and the words a person reads when a duration is refused.
"""

from __future__ import annotations

import math
import re
from datetime import timedelta

import pytest

from chalicelib.durations import MAX_SECONDS, parse_seconds


def refused(message: str) -> pytest.RaisesExc[ValueError]:
    """A ValueError with exactly this message, not one that merely contains it."""
    return pytest.raises(ValueError, match=f"^{re.escape(message)}$")


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (0, 0.0),
        ("0", 0.0),
        ("0s", 0.0),
        (timedelta(0), 0.0),
        (0.5, 0.5),
        ("0.5", 0.5),
        (MAX_SECONDS, float(MAX_SECONDS)),
        (f"{MAX_SECONDS}s", float(MAX_SECONDS)),
        (timedelta(seconds=MAX_SECONDS), float(MAX_SECONDS)),
    ],
)
def test_the_bounds_themselves_are_durations(
    value: float | str | timedelta, seconds: float
) -> None:
    assert parse_seconds(value) == seconds


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90s ", 90.0), ("1h30m\t", 5400.0), (" 1d 12h ", 129600.0), ("15m\n", 900.0)],
)
def test_whitespace_around_a_duration_is_ignored(text: str, seconds: float) -> None:
    assert parse_seconds(text) == seconds


@pytest.mark.parametrize("value", [True, False])
def test_a_boolean_is_refused_saying_so(value: bool) -> None:
    with refused("a duration cannot be a boolean"):
        parse_seconds(value)


@pytest.mark.parametrize(
    ("value", "shown"), [(math.inf, "inf"), (-math.inf, "-inf"), (math.nan, "nan")]
)
def test_a_non_finite_number_is_refused_saying_so(value: float, shown: str) -> None:
    with refused(f"{shown} is not a finite duration"):
        parse_seconds(value)


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        (-1, "-1"),
        (-0.5, "-0.5"),
        (timedelta(seconds=-1), "datetime.timedelta(days=-1, seconds=86399)"),
    ],
)
def test_a_negative_duration_is_refused_saying_so(value: float | timedelta, shown: str) -> None:
    with refused(f"{shown}: a duration cannot be negative"):
        parse_seconds(value)


@pytest.mark.parametrize(
    ("value", "shown"),
    [(MAX_SECONDS + 1, str(MAX_SECONDS + 1)), ("40000d", "'40000d'")],
)
def test_a_duration_past_the_longest_is_refused_saying_so(value: int | str, shown: str) -> None:
    with refused(f"{shown} is longer than the longest duration allowed (100 years)"):
        parse_seconds(value)


@pytest.mark.parametrize("text", ["\u0663s", "\u0661\u0662", "1\u0660m", "1h1h", "2m 30s 1m"])
def test_other_scripts_digits_and_a_unit_given_twice_are_refused(text: str) -> None:
    """`--delay ٣s` was three seconds and `1h1h` two hours: a slip read as a duration."""
    with pytest.raises(ValueError, match=r"duration|twice"):
        parse_seconds(text)
    assert parse_seconds("1h30m") == 5400 and parse_seconds("30m 1h") == 5400

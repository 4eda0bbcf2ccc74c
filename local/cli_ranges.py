"""Numbers in a range, for command-line options: parsed, held to the range, and
refused in the option's own words (argparse.ArgumentTypeError), not as argparse's
"invalid int value" nor as a failure once the command runs.

Every option keeps its refusal; this module holds the shape they share. A refusal
is a str.format template over `text` (what was typed: write {text!r}), `low` and
`high` (the bounds), and, for whole() given a separate `not_whole`, `value` (the
number the text parsed to and the range refused).
"""

from __future__ import annotations

import argparse
import math


def whole(
    text: str, low: int, high: int | None, refusal: str, *, not_whole: str | None = None
) -> int:
    """`text` as a whole number from `low` to `high` (None: no upper bound).

    A text that is no whole number is refused with `not_whole`, or with `refusal`
    where there is none (which then cannot name {value})."""
    try:
        value = int(text)
    except ValueError:
        problem = refusal if not_whole is None else not_whole
        raise argparse.ArgumentTypeError(problem.format(text=text, low=low, high=high)) from None
    if value < low or (high is not None and value > high):
        raise argparse.ArgumentTypeError(refusal.format(text=text, value=value, low=low, high=high))
    return value


def seconds(
    text: str, low: float, high: float | None, refusal: str, *, above: bool = False
) -> float:
    """`text` as a number from `low` (above it, with `above`) to `high` (None: any
    finite number). nan and a word are refused, with `refusal`, as a number out of
    range is: float() takes "nan" and "inf", and either would reach a sleep or a timer."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    over_low = value > low if above else value >= low  # both false for nan
    under_high = value < math.inf if high is None else value <= high
    if not (over_low and under_high):
        raise argparse.ArgumentTypeError(refusal.format(text=text, low=low, high=high))
    return value

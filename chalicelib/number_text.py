"""A number written as text that float() reads as zero although it is not zero.

float("1e-400") is 0.0: the literal is below the smallest float, and Python
rounds it to zero without a word. Where 0 means "off" (a Postgres URL's
statement_timeout=0 is no bound at all, a cache TTL of 0 no cache), a tiny
positive value an operator or client wrote became that "off" silently, and it
slipped past every "must be above 0" check that looked at the float. Spool
refuses such text wherever it reads numbers (JSON bodies and settings, the
settings' own numbers, the duration grammar, store URL options), as it refuses
1e999, which overflows.
"""

from __future__ import annotations

import math
from typing import Any

_NONZERO_DIGITS = frozenset("123456789")


def underflows(text: str, value: float) -> bool:
    """True when `value` is float(`text`), zero, and `text` names a number that is not."""
    if value != 0.0:
        return False
    mantissa = text.lower().partition("e")[0]
    return not _NONZERO_DIGITS.isdisjoint(mantissa)


def too_small(text: str) -> str:
    """The refusal's words: what was written, and what it would have become."""
    shown = text if len(text) <= 40 else text[:40] + "..."
    return f"{shown} is too small to hold as a number: it would be read as 0"


# pydantic's words when a float field gets a number that overflows a float. JSON bodies
# refuse NaN, Infinity and 1e999 before pydantic sees them, so what reaches it is an
# integer of 309 or more digits, or (in a query string) text such as 1e999: a finite
# number, too large. pydantic said "Input should be a finite number" (a field that
# refuses infinities: delay, ?wait=) or "Input should be a valid number" (a handler's
# plain float field): neither told the client what was wrong with a valid number.
TOO_LARGE = "Input is too large a number (beyond a 64-bit float's range): send a smaller one"


def validation_message(error: dict[str, Any]) -> str:
    """pydantic's message for one of its errors (`exc.errors()` with the input), except a
    finite number too large for a float: said to be too large."""
    kind, given = error.get("type"), error.get("input")
    if isinstance(given, bool):
        return str(error.get("msg", ""))
    if kind == "float_type" and isinstance(given, int):
        return TOO_LARGE  # an int is a number; float() of this one overflowed
    if kind == "finite_number" and (isinstance(given, int) or _text_overflows(given)):
        return TOO_LARGE
    if kind in _NUMBER_TYPES and isinstance(given, str):
        return _text_for_a_number(error, given)
    return str(error.get("msg", ""))


# pydantic's kinds for "this is not a number" given text in strict mode, as JSON bodies
# are read ("30" too). Lax mode (query strings, settings) reads text and says
# *_parsing instead, where text is the only way to write a number.
_NUMBER_TYPES = frozenset({"float_type", "int_type"})


def _text_for_a_number(error: dict[str, Any], given: str) -> str:
    """Text where a number belongs: "30" (a number in quotes) or "1h" (a duration) got
    pydantic's "Input should be a valid number", which named neither the quotes nor
    the unit. A job's delay is seconds; a client that meant a time has run_at."""
    said = str(error.get("msg", ""))
    loc = error.get("loc") or ()
    if loc and loc[-1] == "delay":
        return (
            f"{said}: delay is a JSON number of seconds (3600 for an hour), not text;"
            " for a time, give run_at"
        )
    return f"{said}: send a JSON number, not text in quotes"


def _text_overflows(value: Any) -> bool:
    """Number text (digits, not the words inf or nan) whose float is infinite: 1e999."""
    if not isinstance(value, str) or not any(ch.isdigit() for ch in value):
        return False
    try:
        return math.isinf(float(value))
    except ValueError:
        return False

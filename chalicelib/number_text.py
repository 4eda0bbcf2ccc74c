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

"""One grammar for durations, wherever a person types one.

Schedules (`"every": "15m"`), `spool purge --older-than 1h` and
`spool enqueue --delay 90s` all read durations here, so a form accepted in
one place is accepted in all of them: a plain number of seconds ("90",
"1.5"), or one or more number+unit terms, largest first or not
("90s", "15m", "2h", "1d", "1w", "1h30m", "1d 12h").
"""

from __future__ import annotations

import math
import re
from datetime import timedelta

from .number_text import too_small, underflows  # relative: spool_client links this file

UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_NUMBER = r"[0-9]+(?:\.[0-9]+)?"  # ASCII digits: \d would read "٣s" as 3 s
_PLAIN = re.compile(rf"^\s*({_NUMBER})\s*$")
_TERM = re.compile(rf"\s*({_NUMBER})\s*([smhdw])", re.IGNORECASE)
EXAMPLES = "90, '90s', '15m', '2h', '1d', '1w' or '1h30m'"
# Past this no datetime arithmetic is safe (timedelta tops out near 2.7 million
# years); no schedule, delay or retention needs more than a century.
MAX_SECONDS = 100 * 366 * 86400


def parse_seconds(value: float | int | str | timedelta) -> float:
    """Seconds (not negative, finite) from a number, a timedelta or duration text.

    Raises ValueError naming the accepted forms, so callers can show it as is.
    """
    if isinstance(value, bool):
        raise ValueError("a duration cannot be a boolean")
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, int | float):
        seconds = float(value)
    else:
        seconds = _parse_text(value)
        if underflows(value, seconds):  # "0.<400 zeros>1s" read as 0: no period at all
            raise ValueError(f"{value!r}: {too_small(value)}")
    if not math.isfinite(seconds):
        raise ValueError(f"{value!r} is not a finite duration")
    if seconds < 0:
        raise ValueError(f"{value!r}: a duration cannot be negative")
    if seconds > MAX_SECONDS:
        raise ValueError(f"{value!r} is longer than the longest duration allowed (100 years)")
    return seconds


def _parse_text(text: str) -> float:
    plain = _PLAIN.match(text)
    if plain is not None:
        return float(plain.group(1))
    total = 0.0
    position = 0
    stripped = text.rstrip()
    seen: set[str] = set()
    for term in _TERM.finditer(stripped):
        if term.start() != position:
            break
        unit = term.group(2).lower()
        if unit in seen:  # "1h1h" is a slip, not two hours
            raise ValueError(f"{text!r} gives the unit {unit!r} twice; like {EXAMPLES}")
        seen.add(unit)
        total += float(term.group(1)) * UNITS[unit]
        position = term.end()
    if position == 0 or position != len(stripped):
        unsigned = text.strip().removeprefix("-")
        if unsigned != text.strip() and not unsigned.startswith("-"):
            try:  # "-1s", "-5": a duration of the right form, negative
                _parse_text(unsigned)
            except ValueError:
                pass
            else:
                raise ValueError(f"{text!r}: a duration cannot be negative")
        raise ValueError(f"{text!r} is not a duration like {EXAMPLES}")
    return total

"""JSON as RFC 8259 defines it: no NaN, no Infinity, on the way in and out.

Python's json module reads the literals NaN, Infinity and -Infinity, and reads
an out-of-range number such as 1e999 as float('inf'); it then writes them back
as bare NaN/Infinity, which no strict parser (JavaScript, Go, jq, Postgres
jsonb) accepts. One value like that in a stored payload breaks every response
that includes it, so Spool refuses them wherever JSON comes in (`loads_strict`),
checks what it is about to store (`is_finite_json`), and the HTTP edge never
writes them (chalicelib.api.http.dumps, with `finite_or_null` for rows stored
before this rule).
"""

from __future__ import annotations

import json
import math
from typing import Any


class NonFiniteNumber(ValueError):
    """A number JSON cannot carry: NaN, Infinity, or a literal too large for a float."""

    def __init__(self, message: str, token: str) -> None:
        super().__init__(message)
        self.token = token


def _refuse_constant(name: str) -> Any:
    raise NonFiniteNumber(f"{name} is not valid JSON: JSON numbers are finite", name)


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        shown = text if len(text) <= 40 else text[:40] + "..."
        raise NonFiniteNumber(f"the number {shown} is out of range: JSON numbers are finite", text)
    return value


def loads_strict(text: str | bytes) -> Any:
    """json.loads, but NaN, Infinity, -Infinity and overflowing numbers are refused.

    Raises json.JSONDecodeError (a ValueError) for every refusal, so callers that
    already catch it need no second except clause.
    """
    try:
        return json.loads(text, parse_constant=_refuse_constant, parse_float=_finite_float)
    except NonFiniteNumber as exc:
        doc = text.decode("utf-8", "replace") if isinstance(text, bytes) else text
        # The parser does not say where the number was; its first occurrence is a
        # close enough pointer for a person reading the message.
        raise json.JSONDecodeError(str(exc), doc, max(0, doc.find(exc.token))) from None


def is_finite_json(value: Any) -> bool:
    """True when no float anywhere inside `value` is NaN or infinite.

    Walks dicts, lists and tuples only: what a JSON document decodes to.
    """
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, dict):
        return all(is_finite_json(v) for v in value.values())
    if isinstance(value, list | tuple):
        return all(is_finite_json(v) for v in value)
    return True


def finite_or_null(value: Any) -> Any:
    """A copy with every NaN or infinite float replaced by None (what JSON.stringify does)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite_or_null(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite_or_null(v) for v in value]
    return value

"""pydantic's validation errors in Spool's words, read one way wherever they are reported.

Three places turn a ValidationError into something a person reads: the HTTP edge's
422 details, a handler's refusal of a payload at enqueue (HandlerSpec.validate) and
the worker's record of a stored payload its handler's model no longer takes. Each
had its own copy of the reading, and the copies had drifted: only the edge said what
a name may hold instead of quoting the name pattern. This module is that reading,
below both edges (the engine imports nothing of chalicelib.api for it).
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from chalicelib.config import NAME_PATTERN
from chalicelib.number_text import validation_message

# A type's, queue's or tenant's name refused: pydantic says "String should match pattern
# '^[A-Za-z0-9_.:-]{1,64}$'", which the client's exception and `spool enqueue` carried on.
NAME_MISMATCH = f"String should match pattern '{NAME_PATTERN}'"
NAME_RULE = "a name is 1 to 64 letters, digits, '_', '.', ':' or '-'"


def validation_details(exc: ValidationError, prefix: tuple[str | int, ...] = ()) -> list[Any]:
    """Pydantic's errors without the offending input (it may be large or secret): the
    input is read only to word a number too large for a float as that (number_text)."""
    return [
        {"loc": [*prefix, *e["loc"]], "msg": _message(dict(e)), "type": e["type"]}
        for e in exc.errors(include_url=False, include_context=False)
    ]


def validation_summary(exc: ValidationError, prefix: tuple[str | int, ...], shown: int) -> str:
    """The first `shown` errors as "a.b: message", joined by "; ", and how many more:
    one line for an error text (a job's last_error), where the details' list of
    objects has no place."""
    details = validation_details(exc, prefix)
    parts = [f"{'.'.join(str(p) for p in d['loc'])}: {d['msg']}" for d in details[:shown]]
    if len(details) > shown:
        parts.append(f"and {len(details) - shown} more")
    return "; ".join(parts)


def _message(error: dict[str, Any]) -> str:
    said = validation_message(error)
    return NAME_RULE if said == NAME_MISMATCH else said

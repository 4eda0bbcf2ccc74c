"""The EnqueueRequest that strict validation makes of the commonest job, built without it.

Nearly every single enqueue sends `{"type": <name>, "payload": {...}}` and nothing else.
For that shape routes._enqueue_request re-encoded the decoded body and had pydantic
parse and validate it again (about 60% of the route's validation, docs/benchmarks.md
stop 42). `plain_job` answers for it directly, and only when it is certain of the
answer: a body it does not take (another field, a type that is not a name, a payload
holding a lone surrogate, an int past 64 bits, nesting past PLAIN_DEPTH...) returns
None and takes the full validation, which accepts or refuses it in its own words. So
no refusal changes; what an accepted body gives is the model the validation gives,
field for field and type for type (tests/test_plain_job.py, over hypothesis bodies).
"""

from __future__ import annotations

import re
from typing import Any

from chalicelib.service import EnqueueRequest

# EnqueueRequest.type: min_length=1, max_length=64, pattern ^[A-Za-z0-9_.:-]{1,64}$
# (pydantic's Rust regex: `$` is the end of the text, as fullmatch's is).
_NAME = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
# Deeper payloads take the full validation (its parser has a nesting limit of its own).
PLAIN_DEPTH = 32
_INT_BOUND = 1 << 63
_SCALARS = (str, int, float, bool, type(None))
_object_setattr = object.__setattr__


def plain_job(item: dict[str, Any]) -> EnqueueRequest | None:
    """EnqueueRequest.model_validate_json(dumps(item), strict=True) for an item of
    exactly "type" and "payload" that it surely accepts; None otherwise."""
    if len(item) != 2:
        return None
    name = item.get("type")
    payload = item.get("payload")
    if type(name) is not str or type(payload) is not dict or _NAME.fullmatch(name) is None:
        return None
    if not _plain(payload, 0):
        return None
    job = EnqueueRequest.__new__(EnqueueRequest)
    _object_setattr(
        job,
        "__dict__",
        {
            "type": name,
            "payload": payload,
            "queue": None,
            "priority": None,
            "delay": None,
            "run_at": None,
            "max_attempts": None,
            "idempotency_key": None,
            "callback_url": None,
        },
    )
    _object_setattr(job, "__pydantic_fields_set__", {"type", "payload"})
    _object_setattr(job, "__pydantic_extra__", None)
    _object_setattr(job, "__pydantic_private__", None)
    return job


def _plain(value: Any, depth: int) -> bool:
    """True when `value` (decoded by loads_strict) is JSON the strict parse reads back
    as the same values: exact dicts with text keys, lists, text without a lone
    surrogate, ints within 64 bits, finite floats (loads_strict takes no other),
    booleans and null, nested at most PLAIN_DEPTH deep."""
    kind = type(value)
    if kind is str:
        text: str = value
        return text.isascii() or _utf8(text)
    if kind is int:
        number: int = value
        return -_INT_BOUND <= number < _INT_BOUND
    if kind is float or kind is bool or value is None:
        return True
    if depth >= PLAIN_DEPTH:
        return False
    if kind is dict:
        for key, each in value.items():
            if type(key) is not str or not (key.isascii() or _utf8(key)):
                return False
            if not _plain(each, depth + 1):
                return False
        return True
    if kind is list:
        return all(_plain(each, depth + 1) for each in value)
    return False


def _utf8(text: str) -> bool:
    """No lone surrogate: pydantic's parser refuses one where json.loads took it."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True

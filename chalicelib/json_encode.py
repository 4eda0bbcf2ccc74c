"""Compact JSON encoding through the C encoder, without JSONEncoder's Python frames.

JSONEncoder.encode runs two Python frames before its C encoder does any work: encode
itself, then iterencode, which defines a float formatter the C encoder never calls
and makes the C encoder anew. An enqueue encodes three or four small documents (the
job and its payload re-encoded for pydantic, the stored payload, the answer), so
those frames were a visible share of its cost (docs/benchmarks.md, stop 42). The
function made here builds the same C encoder with the same arguments, and a fresh
memo of the containers it is inside, on every call, exactly as iterencode does:
same text, same exceptions (tests/test_http_dumps.py compares them).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from json.encoder import (  # type: ignore[attr-defined]
    c_make_encoder,
    encode_basestring_ascii,
)
from typing import Any


def compact_encoder(
    default: Callable[[Any], Any] | None = None, allow_nan: bool = True
) -> Callable[[Any], str]:
    """What `json.JSONEncoder(separators=(",", ":"), default=default,
    allow_nan=allow_nan).encode` is, as a plain function."""
    reference = json.JSONEncoder(separators=(",", ":"), default=default, allow_nan=allow_nan)
    if c_make_encoder is None:  # a Python built without _json
        return reference.encode
    fallback = reference.default  # `default`, or JSONEncoder's own TypeError

    def encode(data: Any) -> str:
        if isinstance(data, str):
            return encode_basestring_ascii(data)  # type: ignore[no-any-return]
        return "".join(
            c_make_encoder(
                {}, fallback, encode_basestring_ascii, None, ":", ",", False, False, allow_nan
            )(data, 0)
        )

    return encode


def quoted(text: str) -> str:
    """A text as the compact encoders write it: JSON string, non-ASCII escaped."""
    return encode_basestring_ascii(text)  # type: ignore[no-any-return]

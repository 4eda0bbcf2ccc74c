"""The neutral request and response that cross between app.py and chalicelib.api.

Bodies are parsed here rather than by Chalice, so that every malformed or
oversized body gets Spool's own error shape, whatever its content type.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from chalicelib.errors import BadRequest, PayloadTooLarge

JSON_TYPE = "application/json"


@dataclass(frozen=True)
class ApiRequest:
    """What a route needs from the request; header names are matched lower-case."""

    headers: Mapping[str, str] = field(default_factory=dict)
    query: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""
    base_path: str = ""  # the API Gateway stage prefix ("/api"), so links work behind it

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())


@dataclass
class ApiResponse:
    status: int
    body: str
    headers: dict[str, str] = field(default_factory=dict)


def _default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def dumps(data: Any) -> str:
    return json.dumps(data, separators=(",", ":"), default=_default)


def json_response(status: int, data: Any, headers: dict[str, str] | None = None) -> ApiResponse:
    return ApiResponse(status, dumps(data), {"Content-Type": JSON_TYPE, **(headers or {})})


def _no_constants(name: str) -> Any:
    # NaN and Infinity are not JSON; storing them would hand other clients a body
    # their parsers reject.
    raise ValueError(f"{name} is not valid JSON")


def parse_json(body: bytes, max_bytes: int, *, allow_empty: bool = False) -> Any:
    """Decode a request body: 413 past the limit, 400 when it is not JSON."""
    if len(body) > max_bytes:
        raise PayloadTooLarge(
            f"request body is {len(body)} bytes; the limit is {max_bytes}",
            {"limit": max_bytes, "size": len(body)},
        )
    if not body.strip():
        if allow_empty:
            return None
        raise BadRequest("request body is empty; send a JSON object")
    try:
        return json.loads(body, parse_constant=_no_constants)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise BadRequest("request body is not valid JSON", {"reason": str(exc)[:200]}) from exc

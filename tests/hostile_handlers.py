"""A handler whose every output is attacker-chosen text, for the dashboard's browser
tests (loaded into `spool serve` through SPOOL_HANDLERS).

What a tenant controls reaches the page by more roads than the payload: the result,
the handler's log lines (`log_tail`), the error message and even the error's type
name (Python lets a class be named `<img src=x onerror=...>`). This handler sends
the payload's strings down each of them.
"""

from __future__ import annotations

from typing import Any

from chalicelib.handlers import JobContext, handler

HOSTILE_TYPE = "hostile"


@handler(HOSTILE_TYPE, max_attempts=1)
def hostile(payload: dict[str, Any], ctx: JobContext) -> Any:
    for line in payload.get("log", []):
        ctx.log.warning("%s", line)
    error_type = payload.get("raise")
    if error_type:
        raise type(str(error_type), (Exception,), {})(str(payload.get("message", "")))
    return payload.get("result")

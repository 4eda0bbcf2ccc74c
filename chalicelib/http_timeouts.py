"""How long a client of either local server may take: SPOOL_HTTP_*_TIMEOUT, read once.

`spool serve` (local/http_limits.py, enforced by local/http_guard.py) and `chalice
local` (chalicelib/chalice_local_deadline.py) read the same three settings here, so
that a slow or idle client is cut off after the same time under both. Here in
chalicelib, not local/, because `chalice local` runs from a copy of app.py and
chalicelib alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

IDLE = "SPOOL_HTTP_IDLE_TIMEOUT"
REQUEST = "SPOOL_HTTP_REQUEST_TIMEOUT"
SEND = "SPOOL_HTTP_SEND_TIMEOUT"


@dataclass(frozen=True)
class HttpTimeouts:
    """Seconds: `idle` a keep-alive connection may wait for a request's first byte,
    `request` from that byte until the head and body have arrived (408 past it),
    `send` a client has to take an answer."""

    idle: float = 60.0
    request: float = 30.0
    send: float = 60.0

    @classmethod
    def from_settings(cls, settings: Any) -> HttpTimeouts:
        """From a config.Settings; ValueError naming the variable when one is malformed."""
        return cls(
            idle=settings.number(IDLE, cls.idle, minimum=0.05, maximum=86_400),
            request=settings.number(REQUEST, cls.request, minimum=0.05, maximum=3_600),
            send=settings.number(SEND, cls.send, minimum=0.05, maximum=86_400),
        )


def request_timed_out(seconds: float) -> str:
    """The 408's words, under `spool serve` and `chalice local`."""
    return f"the request did not arrive within {seconds:g} seconds"

"""How much a client may ask of `spool serve` before it is cut off.

Read once at start-up from SPOOL_* settings. The numbers bound what one
connection can cost the server (a file descriptor, some bytes of buffer, a
slot) and for how long, so that no number of idle, slow or oversized clients
can lock out the rest. local/http_guard.py enforces them.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass

from chalicelib.api.http import MAX_HEADER_BYTES, max_header_bytes
from chalicelib.config import Settings
from chalicelib.http_timeouts import HttpTimeouts
from local.fair_queue import RESERVE_THREADS

log = logging.getLogger("spool.http")

# File descriptors kept for everything but client sockets: the store (SQLite
# files, Postgres pool), wake-up sockets, the emulator, logs, imports.
FD_RESERVE = 512
# Fewer connections than this is no server at all; refuse such a setting.
MIN_CONNECTIONS = 16


@dataclass(frozen=True)
class HttpLimits:
    """Per-connection limits of the HTTP server (see from_settings for the names)."""

    max_body_bytes: int = 256 * 1024
    max_header_bytes: int = MAX_HEADER_BYTES
    max_connections: int = 10_000
    # The timeouts' defaults are chalice local's too: one source (http_timeouts).
    idle_timeout: float = HttpTimeouts.idle
    request_timeout: float = HttpTimeouts.request
    send_timeout: float = HttpTimeouts.send
    linger_seconds: float = 5.0
    # Pool threads no one tenant may hold (SPOOL_HTTP_RESERVE_THREADS); None: the
    # pool's own choice (local/fair_queue.py, reserve_for).
    reserve_threads: int | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> HttpLimits:
        """Raises ValueError naming the variable when one is malformed."""
        timeouts = HttpTimeouts.from_settings(settings)
        return cls(
            max_body_bytes=settings.max_body_bytes,
            max_header_bytes=max_header_bytes(settings),
            max_connections=settings.integer(
                "SPOOL_HTTP_MAX_CONNECTIONS",
                cls.max_connections,
                minimum=MIN_CONNECTIONS,
                maximum=1_000_000,
            ),
            idle_timeout=timeouts.idle,
            request_timeout=timeouts.request,
            send_timeout=timeouts.send,
            reserve_threads=(
                settings.integer(RESERVE_THREADS, 0, minimum=0, maximum=1024)
                if (settings.extra.get(RESERVE_THREADS) or "").strip()
                else None
            ),
        )

    @property
    def sweep_interval(self) -> float:
        """How often deadlines are checked: a fraction of the shortest one."""
        shortest = min(self.idle_timeout, self.request_timeout, self.send_timeout)
        return max(0.02, min(0.5, shortest / 4))


def fit_connections(wanted: int) -> int:
    """Raise RLIMIT_NOFILE's soft limit so `wanted` client sockets fit beside
    FD_RESERVE; if the hard limit forbids it, lower the connection limit instead
    (logged), since accept() failing with EMFILE is worse than a known cap.

    Past the cap the server evicts its longest-idle connection to admit a new
    one (local/http_guard.py), so a full server still answers.
    """
    if sys.platform == "win32":  # no RLIMIT_NOFILE; waitress's select() has its own cap
        return wanted
    import resource

    needed = wanted + FD_RESERVE
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        target = needed if hard == resource.RLIM_INFINITY else min(hard, needed)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError) as exc:  # e.g. macOS caps below RLIM_INFINITY
            log.warning("could not raise the open-file limit to %d: %s", target, exc)
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return wanted
    fitted = max(MIN_CONNECTIONS, soft - FD_RESERVE)
    log.warning(
        "open-file limit is %d (hard %s): serving at most %d connections, not %d",
        soft,
        "unlimited" if hard == resource.RLIM_INFINITY else hard,
        fitted,
        wanted,
    )
    return fitted

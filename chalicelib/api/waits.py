"""Caps on long-polls (`GET /status/{id}?wait=N`), so waiting never starves the server.

A long-poll holds one server thread for up to its wait: on a threaded server
(waitress in `spool serve`, 16 threads by default) sixteen of them from one
client would leave nothing for /health or anyone else. Each process therefore
lets at most `per_tenant` waits run for one tenant and `total` for everyone,
`total` kept below the server's thread count; a wait over either cap is
refused at once with 429 and Retry-After instead of queueing. Only a request
that would actually wait takes a slot: an answer that is already final (or
cached) is served whatever the caps.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from chalicelib.errors import SpoolError

DEFAULT_PER_TENANT = 4
DEFAULT_TOTAL = 8  # half of local.server.DEFAULT_THREADS
RETRY_AFTER_SECONDS = 1


# What the server running this thread's request says of itself (serving_for).
_serving = threading.local()


def serving_for(stopping: Callable[[], bool]) -> None:
    """The server handling this thread's request: `stopping` says when to answer now,
    with the job as it stands: the server stops (answered before it closes), or the
    request's client hung up (its wait slot freed, not held to the wait's end)."""
    _serving.stopping = stopping


def server_stopping() -> bool:
    stopping = getattr(_serving, "stopping", None)
    return stopping is not None and stopping()


class TooManyWaits(SpoolError):
    code = "too_many_waits"
    status = 429
    retry_after = RETRY_AFTER_SECONDS


class WaitSlots:
    def __init__(self, per_tenant: int = DEFAULT_PER_TENANT, total: int = DEFAULT_TOTAL) -> None:
        self.per_tenant = per_tenant
        self.total = total
        self._lock = threading.Lock()
        self._held: dict[str, int] = {}
        self._all = 0

    def held(self, tenant: str | None = None) -> int:
        with self._lock:
            return self._all if tenant is None else self._held.get(tenant, 0)

    @contextmanager
    def hold(self, tenant: str) -> Iterator[None]:
        """A slot for one wait, or TooManyWaits when a cap is full."""
        with self._lock:
            mine = self._held.get(tenant, 0)
            if mine >= self.per_tenant:
                raise TooManyWaits(
                    f"this API key already has {mine} status requests waiting (the limit is "
                    f"{self.per_tenant}); retry shortly, or poll without ?wait",
                    {"limit": self.per_tenant, "scope": "tenant"},
                )
            if self._all >= self.total:
                raise TooManyWaits(
                    f"the server already holds {self._all} waiting status requests (the limit "
                    f"is {self.total}); retry shortly, or poll without ?wait",
                    {"limit": self.total, "scope": "server"},
                )
            self._held[tenant] = mine + 1
            self._all += 1
        try:
            yield
        finally:
            with self._lock:
                self._all -= 1
                left = self._held[tenant] - 1
                if left:
                    self._held[tenant] = left
                else:
                    del self._held[tenant]

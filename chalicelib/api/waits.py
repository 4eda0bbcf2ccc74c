"""Caps on long-polls (`GET /status/{id}?wait=N`), so waiting never starves the server.

A long-poll holds one server thread for up to its wait: on a threaded server
(waitress in `spool serve`, 16 threads by default) sixteen of them from one
client would leave nothing for /health or anyone else. Each process therefore
lets at most `per_tenant` waits run for one tenant and `total` for everyone,
`total` kept below the server's thread count; a wait over either cap is
refused at once with 429 and Retry-After instead of queueing. Only a request
that would actually wait takes a slot: an answer that is already final (or
cached) is served whatever the caps.

The process-wide cap is shared fairly: when it is full, a tenant holding fewer
waits than another (by two or more) takes a slot from that tenant's oldest
wait, which answers at once with the job as it stands, as a wait that ran out
does (its client polls again). Before, two tenants at their per-tenant cap
filled the server and every other tenant got 429.
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


class Slot:
    """One wait's slot; `ending` is set when another tenant's wait takes it over."""

    __slots__ = ("ending", "tenant")

    def __init__(self, tenant: str) -> None:
        self.tenant = tenant
        self.ending = False


class WaitSlots:
    def __init__(self, per_tenant: int = DEFAULT_PER_TENANT, total: int = DEFAULT_TOTAL) -> None:
        self.per_tenant = per_tenant
        self.total = total
        self._lock = threading.Lock()
        self._slots: list[Slot] = []  # oldest first

    def held(self, tenant: str | None = None) -> int:
        with self._lock:
            return len(self._slots) if tenant is None else self._held_by(tenant)

    def _held_by(self, tenant: str) -> int:
        """Under the lock."""
        return sum(1 for slot in self._slots if slot.tenant == tenant)

    @contextmanager
    def hold(self, tenant: str) -> Iterator[Slot]:
        """A slot for one wait, or TooManyWaits when a cap is full (and no other tenant
        holds enough more to give one up)."""
        slot = Slot(tenant)
        with self._lock:
            mine = self._held_by(tenant)
            if mine >= self.per_tenant:
                raise TooManyWaits(
                    f"this API key already has {mine} status requests waiting (the limit is "
                    f"{self.per_tenant}); retry shortly, or poll without ?wait",
                    {"limit": self.per_tenant, "scope": "tenant"},
                )
            staying = [s for s in self._slots if not s.ending]
            if len(staying) >= self.total and not self._take_over(staying, mine):
                raise TooManyWaits(
                    f"the server already holds {len(staying)} waiting status requests (the "
                    f"limit is {self.total}); retry shortly, or poll without ?wait",
                    {"limit": self.total, "scope": "server"},
                )
            self._slots.append(slot)
        try:
            yield slot
        finally:
            with self._lock:
                self._slots.remove(slot)

    @staticmethod
    def _take_over(staying: list[Slot], mine: int) -> bool:
        """End the oldest wait of the tenant holding the most, if that is at least two
        more than the newcomer's tenant holds (then the split only gets fairer)."""
        counts: dict[str, int] = {}
        for s in staying:
            counts[s.tenant] = counts.get(s.tenant, 0) + 1
        richest = max(counts, key=lambda t: counts[t])
        if counts[richest] < mine + 2:
            return False
        next(s for s in staying if s.tenant == richest).ending = True
        return True

"""The store server's clock, for stores that have one (Postgres, Redis).

Leases, worker beats, run_at and backoff are times every process compares with
every other's. Read from each host's own wall clock, a host whose clock runs
ahead wrote leases that expired late and beats from the future: after a kill -9
its running jobs stayed leased, and it stayed listed as a live worker, for as
long as its clock was ahead; a host behind took back live workers' jobs early.
One clock for all of them ends that: the server's.

Asking the server on every read would cost a round trip per call, so the
server's time is read now and then (every REFRESH_SECONDS, on a connection the
store already holds) and carried forward between reads by this host's
boot-time clock, which never steps with NTP or `date -s` and, unlike
time.monotonic on Linux, keeps counting through a suspend. Until the first read
(and for a store with none) the host's wall clock stands in.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta

from chalicelib.clock import Clock, SystemClock

# How often the server's time is read again: how long a step of the server's own
# clock, or a drift of this host's tick rate, may go unseen.
REFRESH_SECONDS = 30.0


def _ticks() -> Callable[[], float]:
    """Seconds that only move forward, across suspends where the platform can."""
    boottime = getattr(time, "CLOCK_BOOTTIME", None)
    if boottime is None:
        return time.monotonic
    return lambda: time.clock_gettime(boottime)


class ServerClock:
    """A Clock that reads the server's time through `observe`, fed by the store.

    `due()` says a fresh reading is wanted; the store then reads the server's time
    on a connection it holds and passes it to `observe` with the ticks before and
    after the read (the reading is placed halfway: the round trip's error is half
    of it at most).
    """

    def __init__(
        self,
        fallback: Clock | None = None,
        ticks: Callable[[], float] | None = None,
        refresh: float = REFRESH_SECONDS,
    ) -> None:
        self._fallback = fallback or SystemClock()
        self._ticks = ticks or _ticks()
        self._refresh = refresh
        self._lock = threading.Lock()
        self._anchor: tuple[datetime, float] | None = None  # server time, ticks then
        self._asked = float("-inf")  # ticks at the last reading tried

    def ticks(self) -> float:
        return self._ticks()

    def due(self) -> bool:
        """Whether to read the server's time now; true once per refresh period, so a
        failing read is not retried on every call."""
        now = self._ticks()
        with self._lock:
            if now - self._asked < self._refresh:
                return False
            self._asked = now
            return True

    def observe(self, server_now: datetime, before: float, after: float) -> None:
        """The server said `server_now` between ticks `before` and `after`."""
        with self._lock:
            self._anchor = (server_now, (before + after) / 2)

    def now(self) -> datetime:
        anchor = self._anchor
        if anchor is None:
            return self._fallback.now()
        server_then, ticks_then = anchor
        return server_then + timedelta(seconds=self._ticks() - ticks_then)

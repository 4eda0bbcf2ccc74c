"""The result cache in front of status lookups.

Only terminal jobs are cached: their answer cannot change except by a redrive
or a purge, and a redrive or cancel through this process drops the entry, so a
stale answer can come only from work done in another process, for at most the
TTL. Entries are keyed by (tenant, id), so one tenant never reads another's.
cachetools' TTLCache evicts the least recently used entry when full; it is not
thread-safe, hence the lock.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from cachetools import TTLCache


class ResultCache:
    def __init__(self, size: int, ttl: float, timer: Callable[[], float] = time.monotonic) -> None:
        self.enabled = size > 0 and ttl > 0
        self._entries: TTLCache[tuple[str, str], str] = TTLCache(
            maxsize=max(1, size), ttl=max(ttl, 0.001), timer=timer
        )
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, tenant: str, job_id: str) -> str | None:
        with self._lock:
            body = self._entries.get((tenant, job_id)) if self.enabled else None
            if body is None:
                self.misses += 1
            else:
                self.hits += 1
            return body

    def put(self, tenant: str, job_id: str, body: str) -> None:
        if self.enabled:
            with self._lock:
                self._entries[(tenant, job_id)] = body

    def drop(self, tenant: str, job_id: str) -> None:
        with self._lock:
            self._entries.pop((tenant, job_id), None)

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

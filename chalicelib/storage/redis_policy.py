"""What a Redis server's settings do to Spool's keys: its maxmemory-policy (does it
delete them once full?) and its persistence (do they survive a restart?).

The policy is read when a store opens and again, at most every RECHECK_SECONDS, by
/health and the worker's beat: `CONFIG SET maxmemory-policy allkeys-lru` on a
running server went unnoticed until acknowledged jobs answered 404 (a chaos run,
s59). A server that refuses CONFIG GET (managed Redis often renames or disables
it) is not asked again: the docs say what to set.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from typing import Any

import redis

log = logging.getLogger("spool.redis")

# Seconds between reads of maxmemory-policy: one CONFIG GET per half minute per
# process is nothing to the server, and a change is seen well before a filling
# server starts to evict.
RECHECK_SECONDS = 30.0

FIX = "CONFIG SET maxmemory-policy noeviction (and set it in redis.conf)"


def eviction_warning(policy: str) -> str | None:
    """The warning for a maxmemory-policy that lets Redis delete Spool's keys, or None.

    allkeys-* deletes any key once Redis is full: jobs, leases, indexes, idempotency
    keys, silently, so an acknowledged job can vanish or run twice. volatile-* only
    deletes keys with a TTL, and Spool's keys carry none (but /health's own, gone in
    a second anyway): to Spool it is noeviction, a full server refuses writes.
    """
    if not policy.startswith("allkeys-"):
        return None
    return (
        f"redis maxmemory-policy is {policy}: once Redis is full it deletes any key "
        "without a word, Spool's jobs, leases and idempotency keys among them. Run "
        f"{FIX}: a full Redis then refuses writes and Spool answers 503"
    )


def config_value(client: Any, name: str) -> str | None:
    """One CONFIG GET value as text; None when the server refuses CONFIG."""
    try:
        reply = client.config_get(name)
    except redis.RedisError:
        return None
    value = reply.get(name.encode(), reply.get(name))
    if value is None:
        return None
    return value.decode("ascii", "replace") if isinstance(value, bytes) else str(value)


def persistence_warning(appendonly: str | None, save: str | None) -> str | None:
    """The warning for a server that writes nothing to disk (`appendonly no` and
    `save ""`): every acknowledged job is lost when it restarts. None when either is
    on, or when CONFIG GET was refused (unknown: not warned about)."""
    if appendonly is None or save is None:
        return None
    if appendonly.strip().lower() != "no" or save.strip():
        return None
    return (
        'redis has no persistence (appendonly no, save ""): a restart of the Redis '
        "server loses every job, result and idempotency key, though clients saw them "
        "acknowledged. Run CONFIG SET appendonly yes (and set appendonly yes, "
        "appendfsync always in redis.conf); see docs/self-hosting.md, 'Durability on "
        "Redis'"
    )


def warn_if_not_persisted(client: Any) -> None:
    """Log persistence_warning once, when the store opens."""
    warning = persistence_warning(config_value(client, "appendonly"), config_value(client, "save"))
    if warning is not None:
        log.warning("%s", warning)


class PolicyWatch:
    """The server's maxmemory-policy as last read, read again when due.

    `check` logs the eviction warning when the policy becomes an evicting one (once
    per change, not at every read) and says so when it no longer is; `warning` is
    what /health shows meanwhile."""

    def __init__(self, client: Any, timer: Callable[[], float] = time.monotonic) -> None:
        self._client = client
        self._timer = timer
        self._next = 0.0
        self.warning: str | None = None

    def check(self) -> None:
        now = self._timer()
        if now < self._next:
            return
        policy = config_value(self._client, "maxmemory-policy")
        if policy is None:  # refused (or unreachable: the caller's own call says so)
            self._next = math.inf if self._refused() else now + RECHECK_SECONDS
            return
        self._next = now + RECHECK_SECONDS
        warning = eviction_warning(policy)
        if warning is not None and warning != self.warning:
            log.warning("%s", warning)
        elif warning is None and self.warning is not None:
            log.warning("redis maxmemory-policy is now %s: Spool's keys are not evicted", policy)
        self.warning = warning

    def _refused(self) -> bool:
        """True when the server answers but refuses CONFIG GET (renamed, disabled or
        not allowed by an ACL): asking again would only be refused again."""
        try:
            self._client.ping()
        except redis.RedisError:
            return False
        return True

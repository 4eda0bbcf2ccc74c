"""The result cache in front of status lookups: finished jobs, checked against
each tenant's invalidation epoch so no process serves an answer another process
has made untrue for more than about a second.

What is cached: finished jobs only (succeeded, dead, cancelled). Nothing reads
a queued, running or retrying job's status twice with the same answer, so
caching those would only serve stale states. Spool changes a finished job's
answer in exactly two ways: a redrive (dead -> queued) or a purge (deleted); cancel
and finish start from waiting and running states. On the SQL stores SQL by hand may
change or delete one too: their update and delete triggers bump the epoch for every
writer (Postgres migrations 0013 and 0014, SQLite's jobs_deleted_epoch and
jobs_finished_changed_epoch). DynamoDB's TTL also deletes
finished jobs, on its own schedule (up to days after `expires_at`), so there a
cached answer may outlive the item by up to the TTL, as a read may anyway.
A store emptied under the process (a Redis restarted without persistence,
FLUSHDB) would read a never-touched tenant's epoch as 0 again, the value the
cache already held; Redis's epoch is therefore read with its birth mark and
differs while the mark is not the one the process saw (storage/redis_store.py).
Postgres's is read with its tables' storage identity, new after a TRUNCATE or a
schema or database made again (storage/postgres.py, EPOCH_SQL); SQLite's is
refused once the path names another file than the one opened (storage/sqlite.py);
DynamoDB's epoch item carries a birth mark, new in a table made again (dynamodb.py).

How it stays true (the design, and why): every store keeps an invalidation
epoch per tenant (JobStore.cache_epoch(tenant)), bumped in the same transaction
as every redrive or purge that changed one of that tenant's jobs, and only for
the tenants whose jobs changed (an operator's purge or redrive across tenants
bumps each tenant it touched). Each tenant's share re-reads its own epoch at
most once per `recheck` seconds per process (one primary-key read, never one
per request) and empties itself, and only itself, when it moved. So a change
made by any process, the CLI included, is seen within `recheck` plus one read.
Alternatives weighed: caching only succeeded and cancelled jobs still needs the
epoch for purges and gives up dead jobs, which clients poll too; LISTEN/NOTIFY
and SQLite's data_version exist on one store each (and data_version moves on
every write, which would empty the cache many times a second); per-entry
version checks cost a store read per hit, which is what the cache saves. One
store-wide epoch (what this replaced) let a tenant redriving its own dead jobs
in a loop keep every tenant's cache cold, and let a tenant watching `X-Cache`
on its own finished jobs see that someone else redrove or purged. A global
epoch beside the tenants' for operator-wide purges was weighed too: it would
make every check two reads (or a wider one) and still empty every tenant's
share on each `spool purge`, for jobs most tenants never had; bumping exactly
the tenants a purge deleted from costs the purge one small write per tenant in
its transaction instead. The price: one epoch read per tenant served per
`recheck` (not one per process), and a hit waits for its tenant's read once a
second.

Races, per tenant: a status read that started before the tenant's epoch moved
must not land in the cache after the tenant's share emptied itself. `ticket()`
is taken before the store read and `put` refuses a ticket from an older
generation of that tenant's share. This process's own changes (a redrive, purge or
cancel route's `drop`) start a new generation too, so a read racing the change in
this process cannot put its old answer back after the route has answered. When a
tenant's epoch cannot be read (store down) nothing of that tenant's is served or
stored until a read of it works.

Each tenant has a share of its own: at most `size` answers and about
`max_bytes` characters of them, least recently used first out. One shared LRU
let a tenant evict others' answers, and, reading back its own, count the
finished jobs other tenants looked up in between (their `X-Cache: miss`); and
a count alone let ~1,000 answers carrying 256 KiB payloads hold a quarter of a
gigabyte in an API process. A share is a cachetools TTLCache weighed in
characters, each answer counting at least max_bytes / size, so one bound gives
both. An answer larger than the whole share is not kept. A process holds at
most one share per tenant with a key (the operator's set), each made on first
use. TTLCache is not thread-safe, hence the lock.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from cachetools import TTLCache

log = logging.getLogger("spool.cache")

# How often, at most, each process re-reads a tenant's epoch (seconds).
DEFAULT_RECHECK = 1.0
# Characters of answers each tenant's share may hold (SPOOL_CACHE_BYTES).
DEFAULT_MAX_BYTES = 8 * 1024 * 1024


class _Share:
    """One tenant's part of the cache: its answers and what vouches for them.

    `seen` is the tenant's epoch the answers are true for, `checked_at` when it was
    last read, `generation` goes up whenever the answers are emptied (tickets).
    `check` lets one request at a time read this tenant's epoch."""

    def __init__(self) -> None:
        self.entries: TTLCache[str, str] | None = None  # made on the first put
        self.seen: int | None = None
        self.checked_at: float | None = None
        self.generation = 0
        self.check = threading.Lock()

    def __len__(self) -> int:
        return 0 if self.entries is None else len(self.entries)


class ResultCache:
    def __init__(
        self,
        size: int,
        ttl: float,
        timer: Callable[[], float] = time.monotonic,
        epoch: Callable[[str], int] | None = None,
        recheck: float = DEFAULT_RECHECK,
        max_bytes: int = DEFAULT_MAX_BYTES,
    ) -> None:
        self.enabled = size > 0 and ttl > 0 and max_bytes > 0
        # Every answer weighs at least `unit`: a share of size * unit holds at most
        # `size` answers and, weighed by length, about max_bytes of them.
        self._unit = max(1, -(-max_bytes // max(1, size)))
        self._share = self._unit * max(1, size)
        self._ttl = max(ttl, 0.001)
        self._shares: dict[str, _Share] = {}
        self._timer = timer
        self._epoch = epoch
        self._recheck = max(0.0, recheck)
        self._lock = threading.Lock()  # the shares, their entries and the counters
        self.hits = 0
        self.misses = 0
        self.invalidations = 0

    # -- the epoch -------------------------------------------------------------
    def _of(self, tenant: str) -> _Share:
        """The tenant's share, made on first use (kept: it remembers the epoch). A hit
        finds it without the lock: a dict read is atomic, and shares are never removed."""
        share = self._shares.get(tenant)
        if share is not None:
            return share
        with self._lock:
            return self._shares.setdefault(tenant, _Share())

    def _due(self, share: _Share) -> bool:
        checked = share.checked_at
        return checked is None or self._timer() - checked >= self._recheck

    def _verify(self, tenant: str) -> bool:
        """True when the tenant's answers are known to be current (its epoch read
        within `recheck`)."""
        if self._epoch is None:
            return True
        share = self._of(tenant)
        if not self._due(share):
            return share.seen is not None
        with share.check:
            if not self._due(share):  # another thread read it while we waited
                return share.seen is not None
            started = self._timer()
            try:
                value: int | None = self._epoch(tenant)
            except Exception as exc:  # the store is down: vouch for nothing
                log.warning("cannot read the cache epoch (%s); not serving from cache", exc)
                value = None
            with self._lock:
                if value is None or value != share.seen:
                    if len(share) or value is None:
                        self.invalidations += 1
                    share.entries = None
                    share.generation += 1
                share.seen = value
                share.checked_at = started
            return value is not None

    # -- entries ---------------------------------------------------------------
    def ticket(self, tenant: str) -> int:
        """Take before reading the store; hand to `put` with what was read.

        It checks the tenant's epoch first when a check is due, so a ticket never
        vouches for a generation older than the latest epoch read."""
        self._verify(tenant)
        share = self._of(tenant)
        with self._lock:
            return share.generation

    def get(self, tenant: str, job_id: str) -> str | None:
        """`lookup`, counted as a hit or a miss."""
        body = self.lookup(tenant, job_id)
        self.count(hit=body is not None)
        return body

    def lookup(self, tenant: str, job_id: str) -> str | None:
        """The kept answer, uncounted: the status route counts once it knows what it
        answers (a 404 for an unknown id is neither a hit nor a miss)."""
        if not self.enabled or not self._verify(tenant):
            return None
        return self._entries_get(tenant, job_id)

    def count(self, hit: bool) -> None:
        with self._lock:
            if hit:
                self.hits += 1
            else:
                self.misses += 1

    def _entries_get(self, tenant: str, job_id: str) -> str | None:
        with self._lock:
            share = self._shares.get(tenant)
            if share is None or share.entries is None:
                return None
            return share.entries.get(job_id)

    def _weigh(self, body: str) -> int:
        return max(self._unit, len(body))

    def put(self, tenant: str, job_id: str, body: str, ticket: int) -> bool:
        """Keep a finished job's answer; refused (False) when the tenant's answers
        were emptied since `ticket` was taken, since the answer may predate a change."""
        if not self.enabled or not self._verify(tenant):
            return False
        if self._weigh(body) > self._share:
            return False  # would empty the tenant's whole share for one answer
        share = self._of(tenant)
        with self._lock:
            if ticket != share.generation:
                return False
            if share.entries is None:
                share.entries = TTLCache(
                    maxsize=self._share, ttl=self._ttl, timer=self._timer, getsizeof=self._weigh
                )
            share.entries[job_id] = body
            return True

    def drop(self, tenant: str, job_id: str) -> None:
        """Forget a job's answer after this process changed the job (a redrive, a
        purge, a cancel), and void the tenant's outstanding tickets: a status read that
        took one before the change may hold the old answer, and its put after this drop
        served `dead` for a job just redriven, until the epoch's next read."""
        with self._lock:
            share = self._shares.get(tenant)
            if share is None:
                return
            share.generation += 1
            if share.entries is not None:
                share.entries.pop(job_id, None)

    def __len__(self) -> int:
        with self._lock:
            return sum(len(share) for share in self._shares.values())

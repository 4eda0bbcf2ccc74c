"""The HTTP edge's limits: enqueues per tenant, a tenant's backlog, failed sign-ins.

Enqueue rate and backlog are checked before anything is stored, so a refused
request (429 with Retry-After) leaves no job behind. The enqueue bucket lives in
the store (JobStore.take_tokens), so every API process, `spool serve
--processes N` and Lambda containers alike, draws from the same one. The backlog is
counted again by the store's add in the insert's own atomic step (base.Backlog), so
it is one cap across those processes too (except on DynamoDB: EnqueueGate).

Failed authentication is counted per client address in this process only (an
IPv6 address per /64, and per /48 and /32 too, each allowed a fixed multiple of
one address's rate: client_groups.address_groups). Past
its rate the client's credentials are no longer checked at all (429, unchecked),
so a 200 among the 429s cannot mark a right guess; only a credential that has
already signed in from that address is still checked, so the key's owner is not
locked out by a guesser sharing the address (a NAT, a proxy). Those credentials are
remembered as SHA-256 digests and compared in constant time.
"""

from __future__ import annotations

import hmac
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

from chalicelib.api.auth import digest
from chalicelib.api.client_groups import address_group as address_group
from chalicelib.api.client_groups import address_groups
from chalicelib.errors import (
    IdempotencyConflict,
    PayloadTooLarge,
    StoreUnavailable,
    UncertainWrite,
)
from chalicelib.errors import RateLimited as RateLimited  # its users import it from here
from chalicelib.limit_settings import TenantLimit, TenantLimits
from chalicelib.limits import Rate, refill, take
from chalicelib.models import AddResult
from chalicelib.storage.base import Backlog, BacklogFull, JobStore, job_timings

if TYPE_CHECKING:
    from chalicelib.service import Charge

# Addresses remembered for failed sign-ins; the oldest is forgotten past this, so a
# flood from many addresses cannot grow the table without bound.
MAX_CLIENTS = 10_000
# Credentials remembered per address as having signed in from it (the newest kept).
TRUSTED_PER_CLIENT = 8


class EnqueueGate:
    """Per-tenant enqueue rate (a shared token bucket) and backlog quota.

    A job whose idempotency key is already stored is a repeat, not a new job: it
    takes no token and no backlog room, so a client retrying after a lost answer is
    given its job, never a 429. A tenant with a backlog quota enqueues one request
    at a time in this process, and the count read here refuses a full backlog before
    a token is spent. Across processes (`--processes N`, Lambda) that count is not
    reserved, so the store's add is given the cap (`admitted` yields a Backlog) and
    counts again in the same atomic step as its insert: on SQLite, Postgres, Redis
    and the memory store the quota is a hard cap across every process. DynamoDB
    counts its eventually consistent waiting index before it writes, so there the
    quota holds per process only. Redrives likewise (`redrive_room`, `cap`).
    """

    def __init__(self, store: JobStore, limits: TenantLimits) -> None:
        self.store = store
        self.limits = limits
        self._locks: dict[str, threading.Lock] = {}
        self._locks_lock = threading.Lock()

    @contextmanager
    def admitted(
        self,
        tenant: str,
        keys: Sequence[str | None],
        stored: list[AddResult] | None = None,
        ids: Sequence[str] = (),
    ) -> Iterator[Backlog | None]:
        """Raise before storing when the tenant may not enqueue these jobs now (one
        idempotency key or None per job); otherwise store them inside the block, giving
        the store's add the cap this yields (None: the tenant has no backlog quota).
        The store's refusal of a capped add (BacklogFull) leaves here as the same 429.

        The request costs the jobs it stored, each once, however the block ends
        (_settling): `stored` is the list the block fills with each add's results as
        the store answers, and `ids` the ids its jobs are stored under, read back when
        an add's outcome is unknown. Without `stored` a block that ends normally keeps
        every token it took."""
        limit = self.limits.of(tenant)
        if limit.backlog is None:
            taken = self._admit_keys(limit, tenant, keys)
            with self._settling(tenant, limit, taken, stored, ids):
                yield None
            return
        with self._backlog_lock(tenant):
            taken = self._admit_keys(limit, tenant, keys)
            try:
                with self._settling(tenant, limit, taken, stored, ids):
                    yield self.cap(tenant)
            except BacklogFull as full:  # another process filled the room in between
                raise self._backlog_full(full.waiting, limit.backlog, full.jobs) from None

    @contextmanager
    def _settling(
        self,
        tenant: str,
        limit: TenantLimit,
        taken: int,
        stored: list[AddResult] | None,
        ids: Sequence[str],
    ) -> Iterator[None]:
        """Give back, as the block ends, the tokens of the jobs it did not store: a
        key the add found stored (a repeat another process was storing as this one
        counted), and every job of a block that fails. A failure the store answered
        (BacklogFull, a 409 after the add, a 413, a 503 refused before writing) stored
        what `stored` holds; one whose outcome is unknown (a 503 "may have been
        applied", UncertainWrite; an exception) is read back by `ids`, so
        a write that landed costs its jobs once and the client's retry with the same
        key, a repeat, costs nothing; a write that did not land costs nothing and the
        retry that stores the job pays for it. When the read fails too, the jobs not
        known stored are given back: an outcome nobody can see is not charged."""
        try:
            yield
        except Exception as exc:
            if taken:
                self._give_back(tenant, limit, taken - self._stored_after(exc, stored, ids))
            raise
        if taken and stored is not None:
            self._give_back(tenant, limit, taken - _created(stored))

    def _stored_after(
        self, failure: Exception, stored: list[AddResult] | None, ids: Sequence[str]
    ) -> int:
        """How many of the block's jobs the store holds after `failure` ended it."""
        known = _created(stored)
        if isinstance(failure, _ANSWERED) or not ids:
            return known  # the store answered every add: `stored` says what it did
        if isinstance(failure, StoreUnavailable) and not isinstance(failure, UncertainWrite):
            # Refused before anything was written (no connection, a lock, read-only):
            # a read now would meet the same outage and hold the 503 for as long again.
            return known
        try:
            return max(known, len(job_timings(self.store, ids)))
        except Exception as exc:  # the store is still out: count what it answered
            logging.getLogger("spool.api").warning(
                "could not read back which jobs a failed enqueue stored; its tokens for "
                "the %d not known stored are given back: %s",
                len(ids) - known,
                exc,
            )
            return known

    @contextmanager
    def redrive_room(self, tenant: str, exact: int | None = None) -> Iterator[int | None]:
        """How many dead jobs the tenant may redrive inside the block: None without a
        backlog quota or a rate, else the room its backlog has left (429 when none),
        at most its burst (a redrive takes a token a job: redrive_charge).

        A redrive puts dead jobs back among the waiting ones, which the backlog caps:
        uncapped, a tenant held to 100 waiting jobs enqueued failing jobs within its
        quota, let them die and redrove thousands at once. `exact` names how many must
        all fit (jobs named by id): more than the backlog or the burst is 413, more
        than the room 429; a bulk redrive (None) takes at most the room. One request of
        the tenant at a time in this process, as for enqueues. The block gives the
        store's redrive `cap(tenant)`, so the store counts again in the redrive's own
        atomic step (other processes may have filled the room since); its BacklogFull
        leaves as the 429."""
        limit = self.limits.of(tenant)
        burst = None if limit.bucket is None else limit.bucket[1]
        if exact is not None and burst is not None and exact > burst:
            raise PayloadTooLarge(  # no wait lets it in: 413 before any 429
                f"this request redrives {exact} jobs; the tenant may enqueue at most "
                f"{burst} at once: split it",
                {"jobs": exact, "burst": burst},
            )
        if limit.backlog is None:
            yield burst  # a bulk redrive moves at most what one take of the bucket holds
            return
        with self._backlog_lock(tenant):
            if exact is not None and exact > limit.backlog:
                raise PayloadTooLarge(
                    f"this request redrives {exact} jobs; the tenant's backlog holds at "
                    f"most {limit.backlog}: split it",
                    {"jobs": exact, "backlog": limit.backlog},
                )
            waiting = self._waiting(tenant)
            room = limit.backlog - waiting
            if room < max(1, exact or 0):
                raise self._backlog_full(waiting, limit.backlog, exact or 1)
            try:
                yield room if burst is None else min(room, burst)
            except BacklogFull as full:
                raise self._backlog_full(full.waiting, limit.backlog, exact or 1) from None

    def redrive_charge(self, tenant: str) -> Charge | None:
        """What a redrive of the tenant takes from its enqueue bucket before moving
        jobs: one token per job (None: the tenant has no rate). A redrive puts dead
        jobs back to work as an enqueue does: untaken, a tenant held to a few jobs an
        hour let failing jobs die and redrove them all, again and again (stop 48).
        An empty bucket raises the enqueue's own 429, with Retry-After; the tokens of
        ids the store then did not move come back (Service.redrive_ids)."""
        bucket = self.limits.of(tenant).bucket
        if bucket is None:
            return None
        return _BucketCharge(self, f"enqueue:{tenant}", *bucket)

    @staticmethod
    def _rate_limited(wait: float, rate: float, burst: int) -> RateLimited:
        return RateLimited(
            f"enqueue rate limit reached ({burst} jobs at once, {rate:g} per second; "
            "redrives count too); retry after the time in Retry-After",
            retry_after=wait,
            details={"rate_per_second": rate, "burst": burst},
        )

    def cap(self, tenant: str) -> Backlog | None:
        """The cap a store's add or redrive keeps for the tenant (None: no quota)."""
        backlog = self.limits.of(tenant).backlog
        return None if backlog is None else Backlog(tenant, backlog)

    def _waiting(self, tenant: str) -> int:
        return self.store.waiting_count(tenant)

    @staticmethod
    def _backlog_full(waiting: int, backlog: int, jobs: int = 1) -> RateLimited:
        """The 429 for a request the backlog has no room for. A batch refused while
        some room is left says so, with the room: "backlog is full" there sent users
        looking for jobs that were not waiting, when the fix was a smaller batch."""
        room = backlog - waiting
        if room <= 0 or jobs <= 1:
            return RateLimited(
                f"tenant backlog is full: {waiting} jobs waiting, at most "
                f"{backlog}; retry when some have run",
                retry_after=5,
                details={"waiting": waiting, "backlog": backlog},
            )
        return RateLimited(
            f"this request's {jobs} jobs do not fit the tenant's backlog: {waiting} "
            f"waiting, at most {backlog} (room for {room}); send at most {room}, or "
            "retry when some have run",
            retry_after=5,
            details={"waiting": waiting, "backlog": backlog, "jobs": jobs},
        )

    def _backlog_lock(self, tenant: str) -> threading.Lock:
        with self._locks_lock:
            return self._locks.setdefault(tenant, threading.Lock())

    def _fresh(self, tenant: str, keys: Sequence[str | None]) -> int:
        """How many of the jobs would be new: every job without a key, and each
        distinct key not yet stored."""
        plain = sum(1 for k in keys if k is None)
        keyed = {k for k in keys if k is not None}
        return plain + sum(1 for k in keyed if self.store.get_by_key(tenant, k) is None)

    def _admit_keys(self, limit: TenantLimit, tenant: str, keys: Sequence[str | None]) -> int:
        """_admit for the jobs of these keys not yet stored, returning the tokens taken.

        A key another process was storing as this one counted is a repeat once stored:
        twenty requests with one key sent at once to `spool serve --processes 2` had a
        few answered 429 (the bucket's one token, or the backlog's one place, taken by
        the first of them, whose job was stored by then), not the job. So a refusal is
        checked against the keys again: when some are stored by now, the request is
        admitted for what is still new (nothing, for a lone repeat), else refused. One
        refused while the first is still being stored stays refused (429; its retry gets
        the job): whether that store lands is not known here, and a job let in on the
        guess would pass the limit when it does not."""
        fresh = self._fresh(tenant, keys)
        while fresh:
            try:
                return self._admit(limit, tenant, fresh)
            except RateLimited:
                again = self._fresh(tenant, keys) if any(k is not None for k in keys) else fresh
                if again >= fresh:
                    raise
                fresh = again
        return 0

    def _give_back(self, tenant: str, limit: TenantLimit, jobs: int) -> None:
        """Return `jobs` tokens to the tenant's enqueue bucket (a take of -jobs, as a
        redrive's refund is); none when `jobs` is not positive (a key counted stored
        that the add stored anew took none to give). A store that cannot take them back
        now (an outage) leaves them spent, and the request's answer stands."""
        if jobs <= 0:
            return
        assert limit.bucket is not None
        rate, burst = limit.bucket
        try:
            self.store.take_tokens(f"enqueue:{tenant}", rate, burst, -jobs)
        except StoreUnavailable as exc:
            logging.getLogger("spool.api").warning(
                "%d tokens of an enqueue that did not store its jobs were not given back: %s",
                jobs,
                exc,
            )

    def _admit(self, limit: TenantLimit, tenant: str, jobs: int) -> int:
        """Refuse the request (413, 429) or let it in, returning the tokens it took.
        A request no wait can let in is refused 413 before any check whose 429 would
        send the client back to retry it (the backlog's, the bucket's)."""
        bucket = limit.bucket
        if limit.backlog is not None and jobs > limit.backlog:
            raise PayloadTooLarge(
                f"this request enqueues {jobs} jobs; the tenant's backlog holds at "
                f"most {limit.backlog}: split it",
                {"jobs": jobs, "backlog": limit.backlog},
            )
        if bucket is not None and jobs > bucket[1]:
            raise PayloadTooLarge(
                f"this request enqueues {jobs} jobs; the tenant may enqueue at most "
                f"{bucket[1]} at once: split it",
                {"jobs": jobs, "burst": bucket[1]},
            )
        if limit.backlog is not None:
            waiting = self._waiting(tenant)
            if waiting + jobs > limit.backlog:
                raise self._backlog_full(waiting, limit.backlog, jobs)
        if bucket is None:
            return 0
        rate, burst = bucket
        wait = self.store.take_tokens(f"enqueue:{tenant}", rate, burst, jobs)
        if wait > 0:
            raise self._rate_limited(wait, rate, burst)
        return jobs


# Failures the store answered, having written nothing of the add that raised them.
_ANSWERED = (BacklogFull, IdempotencyConflict, PayloadTooLarge)


def _created(stored: list[AddResult] | None) -> int:
    """The jobs an add's results say it stored anew (not a repeat of a stored key)."""
    return 0 if stored is None else sum(1 for result in stored if result.created)


class FailedSignIns:
    """A token bucket per client address, drawn on by each failed authentication.

    While a client's bucket is empty, a credential it has not signed in with before
    is refused without being checked: refusing only the failures (as before) still
    checked every guess and answered a right one 200, so guessing went on at full
    speed with the hits plain to see."""

    def __init__(self, rate: Rate | None, timer: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self._timer = timer
        self._lock = threading.Lock()
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()
        # Digests, never the keys: compared in constant time (trusted), and a key is
        # not held in this process's memory beyond its request.
        self._trusted: OrderedDict[str, tuple[bytes, ...]] = OrderedDict()

    def refusing(self, client: str, credential: str) -> float:
        """Seconds until this client may have an unknown credential checked again;
        0.0 when it may now (not throttled, or the credential signed in from here).
        Its /48 and /32 (an IPv6 client) refuse it too while their allowance is spent,
        except a credential that signed in from the client's own group."""
        if self.rate is None:
            return 0.0
        groups = address_groups(client)
        buckets = self._buckets
        if all(group not in buckets for group, _ in groups):  # no lock on the common path
            return 0.0
        if self._is_trusted(groups[0][0], credential):
            return 0.0
        now = self._timer()
        wait = 0.0
        for group, multiple in groups:
            entry = buckets.get(group)
            if entry is None:
                continue
            rate, burst = self._per_second(multiple)
            tokens = refill(entry[0], now - entry[1], rate, burst)
            if tokens < 1:
                wait = max(wait, (1 - tokens) / rate)
        return wait

    def succeeded(self, client: str, credential: str, signed: bytes | None = None) -> None:
        """Remember that this credential signed in from this client, as its newest: the
        keys in use stay, and the one forgotten past TRUSTED_PER_CLIENT is the one
        unused longest (a key kept its first place, however often it signed in, and
        newer keys pushed it out)."""
        if self.rate is None:
            return
        client = address_group(client)
        if signed is None:  # else the caller's digest(credential), made for the key check
            signed = digest(credential)
        known = self._trusted.get(client, ())
        if known and known[-1] == signed:  # the common case: no lock
            return
        with self._lock:
            known = tuple(c for c in self._trusted.pop(client, ()) if c != signed)
            self._trusted[client] = (*known, signed)[-TRUSTED_PER_CLIENT:]
            while len(self._trusted) > MAX_CLIENTS:
                self._trusted.popitem(last=False)

    def _is_trusted(self, client: str, credential: str) -> bool:
        """Whether this credential signed in from this client lately: its digest
        compared with every one kept, in constant time, as Keyring.match does."""
        offered = digest(credential)
        found = False
        for signed in self._trusted.get(client, ()):
            found |= hmac.compare_digest(signed, offered)
        return found

    def _per_second(self, multiple: int = 1) -> tuple[float, int]:
        """(tokens a second, capacity) of a group allowed `multiple` clients' rate."""
        assert self.rate is not None
        return multiple * self.rate.count / self.rate.per, multiple * self.rate.count

    def failed(self, client: str) -> float:
        """Count one failure against each of the client's groups; the seconds it must
        now wait (0.0: none), the longest any group asks."""
        if self.rate is None:
            return 0.0
        now = self._timer()
        wait = 0.0
        with self._lock:
            for group, multiple in address_groups(client):
                rate, burst = self._per_second(multiple)
                tokens, at = self._buckets.pop(group, (float(burst), now))
                tokens = refill(tokens, now - at, rate, burst)
                # The count-th failure in a window still takes a token (a plain 401); the
                # one after finds none and waits (429), so "20/m" allows 20.
                left, waits = take(tokens, rate, 1)
                self._buckets[group] = (left, now)
                wait = max(wait, waits)
            while len(self._buckets) > MAX_CLIENTS:
                self._buckets.popitem(last=False)
            return wait


@dataclass(frozen=True)
class _BucketCharge:
    """A redrive's charge (service.Charge) on the tenant's enqueue bucket: a take of
    n tokens, refused whole with the enqueue's 429; a give-back is a take of -n (every
    store's bucket arithmetic adds it, and refills never past the burst)."""

    gate: EnqueueGate
    key: str
    rate: float
    burst: int

    def take(self, jobs: int) -> None:
        wait = self.gate.store.take_tokens(self.key, self.rate, self.burst, jobs)
        if wait > 0:
            raise self.gate._rate_limited(wait, self.rate, self.burst)

    def give_back(self, jobs: int) -> None:
        self.gate.store.take_tokens(self.key, self.rate, self.burst, -jobs)

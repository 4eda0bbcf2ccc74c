"""Execution limits and fair turns: the rules a store's claim keeps when given a policy.

A `ClaimPolicy` travels with `JobStore.claim(..., policy=...)`. The store holds
whatever must be shared between workers (running jobs are rows it already has;
rate windows are start times it records in the claim's own transaction), and
this module decides, from what the store read, which due jobs may start now.
Keeping the decision here means SQLite, Postgres, Redis, DynamoDB and memory
answer alike; keeping the state in the store means the limits hold across every
worker and process, not per worker as Celery's `rate_limit` does.

- Concurrency: at most N jobs of a queue or of a job type running at once.
- Rate: at most N starts in any window of the given length (a sliding window of
  recorded starts, so a burst at the end of one window and the start of the
  next cannot double it).
- A job held back by a limit is simply not claimed: it keeps its attempts and
  its place, and the next claim looks again.
- Fair turns: with `fair` on, due jobs are taken tenant by tenant in stride
  order (each tenant's turn costs 1/weight), so a tenant with a backlog of
  50,000 cannot starve one with a single job; within a tenant, priority then
  run_at order still decides.
"""

from __future__ import annotations

import heapq
import math
import re
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Generic, Literal, TypeVar

from chalicelib.durations import parse_seconds

Scope = Literal["queue", "type"]
SCOPES: tuple[Scope, ...] = ("queue", "type")
# A sliding window keeps one recorded start per job started in it; past this a
# window's bookkeeping would outgrow what a claim should read.
MAX_RATE_COUNT = 10_000
MAX_CONCURRENCY = 1_000_000
MAX_WEIGHT = 1000
_RATE = re.compile(r"^\s*(\d+)\s*/\s*(.+?)\s*$", re.ASCII)  # ASCII digits: "\u0665/s" is no rate
_UNIT_ONLY = {"s": "1s", "m": "1m", "h": "1h", "d": "1d", "sec": "1s", "min": "1m"}


# How much longer than its own window a rate counts starts (Rate.window): at most
# HANDOFF_MARGIN seconds, and HANDOFF_SHARE of a short window. "10/s" then starts at
# most 10 jobs in any 1.1 s, so their handlers, begun up to 0.1 s after their claims,
# start at most 10 in any second.
HANDOFF_MARGIN = 0.1
HANDOFF_SHARE = 0.1


@dataclass(frozen=True)
class Rate:
    """At most `count` starts in any window of `per` seconds."""

    count: int
    per: float

    def __post_init__(self) -> None:
        if not 1 <= self.count <= MAX_RATE_COUNT:
            raise ValueError(f"a rate's count must be 1 to {MAX_RATE_COUNT}, not {self.count}")
        if not (math.isfinite(self.per) and 0.001 <= self.per <= 86400):
            raise ValueError("a rate's window must be from 0.001s (1 ms) to 1d (one day)")

    @property
    def window(self) -> float:
        """Seconds a store counts starts back over: `per`, and HANDOFF_MARGIN of it more.

        A start is stamped when the claim takes the job; its handler begins when a pool
        thread picks it up, milliseconds later. Counted over `per` alone, a batch whose
        hand-off was slow and the next window's first batch, handed off quickly, fell
        in one second of handler starts: up to 2N calls a partner API saw under "N/s".
        """
        return self.per + min(HANDOFF_MARGIN, self.per * HANDOFF_SHARE)

    @classmethod
    def parse(cls, text: str | Rate) -> Rate:
        """'10/s', '100/m', '5/10s', '1000/h': count, a slash, then a duration."""
        if isinstance(text, Rate):
            return text
        if not isinstance(text, str):
            raise ValueError(f"a rate is text such as '10/s', not {type(text).__name__}")
        match = _RATE.match(text)
        if match is None:
            raise ValueError(f"{text!r} is not a rate: write it as count/window, e.g. '10/s'")
        window = match.group(2)
        window = _UNIT_ONLY.get(window.lower(), window)
        try:
            per = parse_seconds(window)
        except ValueError as exc:
            raise ValueError(f"{text!r}: {exc}") from None
        return cls(int(match.group(1)), per)

    def __str__(self) -> str:
        per = f"{self.per:g}s"
        return f"{self.count}/{per}"


@dataclass(frozen=True)
class Limit:
    """One limit on a queue or on a job type, shared by every worker."""

    scope: Scope
    name: str
    concurrency: int | None = None
    rate: Rate | None = None

    def __post_init__(self) -> None:
        if self.scope not in SCOPES:
            raise ValueError(f"a limit applies to a queue or a type, not {self.scope!r}")
        if not self.name:
            raise ValueError("a limit needs the name of its queue or type")
        if self.concurrency is not None and (
            isinstance(self.concurrency, bool)
            or not isinstance(self.concurrency, int)
            or not 1 <= self.concurrency <= MAX_CONCURRENCY
        ):
            raise ValueError(f"concurrency must be a whole number from 1 to {MAX_CONCURRENCY}")
        if self.concurrency is None and self.rate is None:
            raise ValueError(
                f"the limit on {self.scope} {self.name!r} sets neither concurrency nor rate"
            )

    @property
    def key(self) -> str:
        """The name a store files this limit's state under ('type:send_email')."""
        return f"{self.scope}:{self.name}"


def limit_keys(queue: str, type_: str) -> tuple[str, str]:
    return f"queue:{queue}", f"type:{type_}"


@dataclass(frozen=True)
class Hold:
    """One due job a claim passed over, and the limit that held it.

    job_id "" says only that the limit was full when the claim began, or filled
    during it (its other jobs, if any are due, may not have been looked at).
    `wait` is the seconds until the limit admits a job again, where the store could
    tell (a rate's recorded starts say when the oldest leaves its window; a
    concurrency limit frees a slot whenever a job ends): the SQS worker sends a held
    job back to the queue that much later (chalicelib/events.py).
    """

    job_id: str
    key: str
    kind: Literal["concurrency", "rate"]
    wait: float | None = field(default=None, compare=False)


class HoldLog:
    """What the claims of one thread held back, for the worker's metrics and for SQS.

    A claim records into the log of the thread that called it (`watch`), so two
    threads claiming at once never see each other's holds.
    """

    def __init__(self) -> None:
        self._local = threading.local()

    @contextmanager
    def watch(self) -> Iterator[list[Hold]]:
        holds: list[Hold] = []
        previous = getattr(self._local, "holds", None)
        self._local.holds = holds
        try:
            yield holds
        finally:
            self._local.holds = previous

    def record(self, hold: Hold) -> None:
        holds = getattr(self._local, "holds", None)
        if holds is not None:
            holds.append(hold)


@dataclass(frozen=True)
class ClaimPolicy:
    """Limits and fairness for a claim. The empty policy changes nothing."""

    limits: tuple[Limit, ...] = ()
    fair: bool = False
    weights: Mapping[str, int] = field(default_factory=dict)
    holds: HoldLog = field(default_factory=HoldLog, compare=False, repr=False)

    def __post_init__(self) -> None:
        seen: set[str] = set()
        for limit in self.limits:
            if limit.key in seen:
                raise ValueError(f"two limits for {limit.scope} {limit.name!r}: merge them")
            seen.add(limit.key)
        for tenant, weight in self.weights.items():
            if (
                isinstance(weight, bool)
                or not isinstance(weight, int)
                or not 1 <= weight <= MAX_WEIGHT
            ):
                raise ValueError(
                    f"tenant {tenant!r}: a weight is a whole number from 1 to {MAX_WEIGHT}"
                )

    @property
    def active(self) -> bool:
        return bool(self.limits) or self.fair

    def by_key(self) -> dict[str, Limit]:
        return {limit.key: limit for limit in self.limits}

    def concurrency_keys(self) -> list[str]:
        return [limit.key for limit in self.limits if limit.concurrency is not None]

    def rate_limits(self) -> list[Limit]:
        return [limit for limit in self.limits if limit.rate is not None]

    def weight(self, tenant: str) -> int:
        return self.weights.get(tenant, 1)


NO_POLICY = ClaimPolicy()


class Admission:
    """Room left under each limit during one claim, from what the store read.

    `running` is jobs running now per limit key; `started` is starts recorded in
    each rate limit's window (ending now). `admit` takes room from every limit a
    job falls under, or records the hold and takes nothing. `leaving`, when the
    store gives it, is per rate limit key the (seconds from now until it leaves the
    window, count) of each recorded start: a rate hold then says when it ends.
    """

    def __init__(
        self,
        policy: ClaimPolicy,
        running: Mapping[str, int],
        started: Mapping[str, int],
        leaving: Mapping[str, Sequence[tuple[float, int]]] | None = None,
    ) -> None:
        self.policy = policy
        self._limits = policy.by_key()
        self._leaving = leaving or {}
        self._room: dict[str, tuple[int, Literal["concurrency", "rate"]]] = {}
        for key, limit in self._limits.items():
            options: list[tuple[int, Literal["concurrency", "rate"]]] = []
            if limit.concurrency is not None:
                options.append((limit.concurrency - running.get(key, 0), "concurrency"))
            if limit.rate is not None:
                options.append((limit.rate.count - started.get(key, 0), "rate"))
            self._room[key] = min(options)
        self.taken: dict[str, int] = {}
        for key in self.full_keys():
            # Full before this claim looked at any job: a store may leave the key's
            # jobs out of its query, so say so once (job_id "") for the worker.
            policy.holds.record(self._hold("", key))

    def full_keys(self) -> list[str]:
        """Limits with no room at all: a store may leave their jobs out of its query."""
        return [key for key, (room, _) in self._room.items() if room <= 0]

    def full(self, scope: Scope) -> list[str]:
        prefix = f"{scope}:"
        return [key[len(prefix) :] for key in self.full_keys() if key.startswith(prefix)]

    def admit(self, job_id: str, queue: str, type_: str) -> bool:
        keys = [k for k in limit_keys(queue, type_) if k in self._room]
        for key in keys:
            room, _ = self._room[key]
            if room <= 0:
                self.policy.holds.record(self._hold(job_id, key))
                return False
        for key in keys:
            room, kind = self._room[key]
            self._room[key] = (room - 1, kind)
            self.taken[key] = self.taken.get(key, 0) + 1
            if room == 1:  # this job filled it: the rest of its jobs may go unread
                self.policy.holds.record(self._hold("", key))
        return True

    def _hold(self, job_id: str, key: str) -> Hold:
        """The hold of a full limit, with when it admits again where that is known."""
        _, kind = self._room[key]
        rate = self._limits[key].rate
        wait = None
        if kind == "rate" and rate is not None and key in self._leaving:
            wait = rate_wait(self._leaving[key], self.taken.get(key, 0), rate)
        return Hold(job_id, key, kind, wait)

    def rate_starts(self, queue: str, type_: str) -> list[str]:
        """The rate-limited keys a start of this job must be recorded under."""
        return [
            k
            for k in limit_keys(queue, type_)
            if k in self._limits and self._limits[k].rate is not None
        ]


def rate_wait(leaving: Sequence[tuple[float, int]], taken: int, rate: Rate) -> float:
    """Seconds until a rate's window, holding starts that leave it after `leaving`
    (seconds from now, count) and `taken` more made now, has room for one more start:
    when enough of the oldest have left it. Never below 0."""
    excess = sum(count for _, count in leaving) + taken - rate.count + 1
    for at, count in [*sorted(leaving), (rate.window, taken)]:
        excess -= count
        if excess <= 0:
            return max(0.0, at)
    return rate.window


C = TypeVar("C")


@dataclass
class FairPick(Generic[C]):
    chosen: list[C]
    passes: dict[str, float]  # the new pass of every tenant that took a turn
    clock: float  # the turn the last pick happened at: where newcomers join


def fair_pick(
    tenants: Iterable[str],
    passes: Mapping[str, float],
    clock: float,
    policy: ClaimPolicy,
    fetch: Callable[[str], Sequence[C]],
    admit: Callable[[C], bool],
    limit: int,
) -> FairPick[C]:
    """Stride scheduling over tenants: whoever has the lowest pass takes the next turn.

    A tenant's pass moves on by 1/weight per job it starts. A tenant absent or
    behind joins at `clock` (the pass of the last turn taken), so being idle
    earns no burst of turns later. `fetch(tenant)` gives that tenant's due jobs
    best first (called once, only for tenants whose turn comes); `admit` applies
    the limits. Ties go to the tenant name, so every store picks the same.
    """
    heap = [(max(passes.get(t, clock), clock), t) for t in set(tenants)]
    heapq.heapify(heap)
    buffers: dict[str, Iterator[C]] = {}
    chosen: list[C] = []
    moved: dict[str, float] = {}
    while heap and len(chosen) < limit:
        turn, tenant = heapq.heappop(heap)
        if tenant not in buffers:
            buffers[tenant] = iter(fetch(tenant))
        picked = next((c for c in buffers[tenant] if admit(c)), None)
        if picked is None:
            continue  # nothing due (or nothing the limits let start): out of this round
        chosen.append(picked)
        clock = turn
        moved[tenant] = turn + 1.0 / policy.weight(tenant)
        heapq.heappush(heap, (moved[tenant], tenant))
    return FairPick(chosen, moved, clock)


# A bucket stamped further ahead than this was stamped before the wall clock stepped
# back (not by a take that merely read the clock a moment before another's turn).
STEP_BACK = 1.0


def bucket_stamp(at: float, now: float) -> tuple[float, float]:
    """(seconds to refill, the bucket's new stamp) for a bucket last stamped `at`, in
    seconds. Never back in time for a take racing another; but after a step back of the
    clock, refill from now instead of waiting for the clock to catch up."""
    if at - now > STEP_BACK:
        return 0.0, now
    return now - at, max(at, now)


def refill(tokens: float, elapsed: float, rate: float, burst: int) -> float:
    """A token bucket's tokens after `elapsed` seconds at `rate`, never above `burst`."""
    return min(float(burst), tokens + max(0.0, elapsed) * rate)


def take(tokens: float, rate: float, cost: int) -> tuple[float, float]:
    """(tokens left, seconds to wait): take `cost` when there, else wait for the shortfall."""
    if tokens >= cost:
        return tokens - cost, 0.0
    return tokens, (cost - tokens) / rate

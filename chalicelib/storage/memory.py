"""An in-process store: the contract's reference implementation and the fastest test loop."""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterable, Sequence
from copy import deepcopy
from dataclasses import replace
from datetime import datetime, timedelta

from chalicelib import worker_id
from chalicelib.clock import Clock, SystemClock, from_epoch
from chalicelib.errors import InvalidTransition, JobNotFound
from chalicelib.ids import new_lease_token
from chalicelib.limits import (
    STEP_BACK,
    Admission,
    ClaimPolicy,
    bucket_stamp,
    fair_pick,
    limit_keys,
    refill,
    take,
)
from chalicelib.models import (
    WAITING_STATES,
    AddResult,
    Attempt,
    Completion,
    CounterKey,
    Job,
    JobPage,
    JobQuery,
    JobState,
    MinuteTally,
    NewJob,
    WorkerBeat,
)
from chalicelib.redrive_attempts import RedriveAttempts
from chalicelib.storage import history
from chalicelib.storage.base import (
    LEASE_EXPIRED_ERROR,
    MINUTES_KEPT,
    Backlog,
    check_limit,
    completion_events,
    decode_cursor,
    encode_cursor,
    log_buried_by_reap,
    minute_of,
    redrive_fit,
    to_micros,
    unstarted_reap,
)
from chalicelib.storage.memory_totals import QueueLedger
from chalicelib.storage.notify import LocalNotifier
from chalicelib.storage.queue_totals import QueueTotals
from chalicelib.webhooks import outbox
from chalicelib.webhooks.outbox import Delivery


class MemoryStore:
    def __init__(
        self,
        clock: Clock | None = None,
        attempt_history: int | None = None,
        webhook_history: int | None = None,
    ) -> None:
        self.clock: Clock = clock or SystemClock()
        self.history_limit = attempt_history or history.history_limit()
        self.webhook_history = webhook_history or outbox.kept_finished()
        self._history: dict[str, deque[Attempt]] = {}
        self._lease_worker: dict[str, str] = {}  # job id -> who claimed it
        # Jobs claimed with started=False whose claimer has not yet called start().
        self._unstarted: set[str] = set()
        self._beats: dict[str, WorkerBeat] = {}
        self.notifier = LocalNotifier()
        self._jobs: dict[str, Job] = {}
        self._idem: dict[tuple[str, str], str] = {}
        self._counters: dict[CounterKey, int] = {}
        self._ledger = QueueLedger()  # queue_totals, kept as jobs move (memory_totals.py)
        # (tenant, queue, minute) -> [succeeded, failed] attempts (JobStore.throughput)
        self._minutes: dict[tuple[str, str, datetime], list[int]] = {}
        self._epochs: dict[str, int] = {}  # tenant -> its JobStore.cache_epoch
        self._callbacks: dict[str, str] = {}  # job id -> callback URL
        self._deliveries: dict[str, Delivery] = {}  # the webhook outbox
        self._job_deliveries: dict[str, list[str]] = {}  # job id -> its delivery ids
        self._lock = threading.RLock()
        # Limits and fair turns (chalicelib/limits.py): start times per rate-limited
        # key, each tenant's stride pass and the pass of the last turn taken.
        self._starts: dict[str, deque[datetime]] = {}
        self._passes: dict[str, float] = {}
        self._fair_clock = 0.0
        self._buckets: dict[str, tuple[float, datetime]] = {}  # take_tokens: tokens, when

    # -- helpers -----------------------------------------------------------
    def _bump(self, job: Job, *events: str) -> None:
        for event in events:
            key = CounterKey(job.queue, job.type, event)
            self._counters[key] = self._counters.get(key, 0) + 1
            self._ledger.bumped(job.queue, job.type, event)
            if event in ("succeeded", "failed"):  # an attempt ended: the throughput chart
                minute = minute_of(self.clock.now())
                tally = self._minutes.setdefault((job.tenant, job.queue, minute), [0, 0])
                tally[0 if event == "succeeded" else 1] += 1

    def _update(self, job: Job, **changes: object) -> Job:
        changed = job.model_copy(update=changes)
        held = self._jobs.get(job.id)  # the state it leaves is the stored one
        self._jobs[job.id] = changed
        self._ledger.moved(job.queue, None if held is None else held.state, changed.state)
        return changed

    def _record(self, job_id: str, attempt: Attempt) -> None:
        log = self._history.get(job_id)
        if log is None or log.maxlen != self.history_limit:
            log = self._history[job_id] = deque(log or (), maxlen=self.history_limit)
        log.append(history.fit(attempt))

    def _outbox(self, job: Job, state: JobState, now: datetime) -> None:
        """The webhook delivery of a terminal transition, under the same lock."""
        url = self._callbacks.get(job.id)
        if url is None:
            return
        delivery = Delivery(
            id=outbox.new_delivery_id(),
            job_id=job.id,
            tenant=job.tenant,
            url=url,
            event=outbox.event_for(state),
            state=outbox.PENDING,
            attempts=0,
            next_at=now,
            created_at=now,
        )
        self._deliveries[delivery.id] = delivery
        ids = self._job_deliveries.setdefault(job.id, [])
        ids.append(delivery.id)
        finished = sorted(
            (i for i in ids if self._deliveries[i].state != outbox.PENDING), key=self._age
        )
        dropped = set(finished[: max(0, len(finished) - self.webhook_history)])
        if dropped:
            for gone in dropped:
                del self._deliveries[gone]
            ids[:] = [i for i in ids if i not in dropped]

    def _age(self, delivery_id: str) -> tuple[datetime, str]:
        """A delivery's place among its job's: by created_at, ties by id (see base.py)."""
        return self._deliveries[delivery_id].created_at, delivery_id

    def _forget_webhooks(self, job_id: str) -> None:
        """A deleted job's callback URL and deliveries go with it."""
        self._callbacks.pop(job_id, None)
        for gone in self._job_deliveries.pop(job_id, ()):
            del self._deliveries[gone]

    def _reap(self, now: datetime) -> None:
        for job in list(self._jobs.values()):
            if (
                job.state is JobState.RUNNING
                and job.lease_expires_at
                and job.lease_expires_at <= now
            ):
                holder = self._lease_worker.pop(job.id, None)
                if job.id in self._unstarted:
                    self._unstarted.discard(job.id)
                    self._update(job, **unstarted_reap(job.attempts, now), updated_at=now)
                    continue
                dead = job.attempts >= job.max_attempts
                self._record(
                    job.id,
                    history.lease_expired(
                        job.attempts, job.started_at, job.lease_expires_at, holder, dead
                    ),
                )
                if dead:
                    log_buried_by_reap(
                        job.id, job.tenant, job.type, job.queue, job.attempts,
                        job.max_attempts, holder,
                    )  # fmt: skip
                self._update(
                    job,
                    state=JobState.DEAD if dead else JobState.RETRYING,
                    run_at=now if not dead else job.run_at,
                    lease_token=None,
                    lease_expires_at=None,
                    last_error=LEASE_EXPIRED_ERROR,
                    updated_at=now,
                    finished_at=now if dead else None,
                )
                self._bump(job, "failed", "dead" if dead else "retried")
                if dead:
                    self._outbox(job, JobState.DEAD, now)

    # -- contract ----------------------------------------------------------
    def add(self, jobs: Sequence[NewJob], cap: Backlog | None = None) -> list[AddResult]:
        now = self.clock.now()
        results: list[AddResult] = []
        callbacks = {new.id: new.callback_url for new in jobs if new.callback_url}
        with self._lock:
            staged: dict[tuple[str, str], Job] = {}
            for new in jobs:
                key = (new.tenant, new.idempotency_key) if new.idempotency_key is not None else None
                if key is not None and key in self._idem:
                    held = self._jobs[self._idem[key]]
                    results.append(AddResult(held, False, self._callbacks.get(held.id)))
                    continue
                if key is not None and key in staged:
                    results.append(AddResult(staged[key], False, callbacks.get(staged[key].id)))
                    continue
                job = Job(
                    id=new.id,
                    tenant=new.tenant,
                    type=new.type,
                    queue=new.queue,
                    priority=new.priority,
                    payload=new.payload,
                    max_attempts=new.max_attempts,
                    run_at=new.run_at,
                    idempotency_key=new.idempotency_key,
                    created_at=now,
                    updated_at=now,
                )
                if key is not None:
                    staged[key] = job
                results.append(AddResult(job, True))
            if cap is not None:  # under the lock every write takes
                fresh = sum(1 for r in results if r.created)
                refused = cap.refuses(self.waiting_count(cap.tenant), fresh)
                if refused is not None:
                    raise refused
            for result in results:
                if result.created:
                    self._jobs[result.job.id] = result.job
                    self._ledger.moved(result.job.queue, None, result.job.state)
                    if callbacks.get(result.job.id):
                        self._callbacks[result.job.id] = callbacks[result.job.id]
                    if result.job.idempotency_key is not None:
                        self._idem[(result.job.tenant, result.job.idempotency_key)] = result.job.id
                    self._bump(result.job, "enqueued")
        if any(r.created for r in results):
            self.notifier.notify()
        return results

    def check_writable(self) -> None:
        """Nothing known here that a write would not find out itself (base.py)."""

    def get(self, job_id: str, tenant: str | None = None) -> Job | None:
        with self._lock:
            job = self._jobs.get(job_id)
        if job is None or (tenant is not None and job.tenant != tenant):
            return None
        return job

    def claim(
        self,
        limit: int,
        lease_seconds: float,
        queues: Sequence[str] | None = None,
        ids: Sequence[str] | None = None,
        policy: ClaimPolicy | None = None,
        started: bool = True,
    ) -> list[Job]:
        now = self.clock.now()
        expires = now + timedelta(seconds=lease_seconds)
        with self._lock:
            self._reap(now)
            pool = (
                [self._jobs[i] for i in dict.fromkeys(ids) if i in self._jobs]
                if ids is not None
                else self._jobs.values()
            )
            due = [
                j
                for j in pool
                if j.state in WAITING_STATES
                and j.run_at <= now
                and (queues is None or j.queue in queues)
            ]
            due.sort(key=lambda j: (-j.priority, j.run_at, j.created_at, j.id))
            if policy is not None and policy.active:
                due = self._admit(due, limit, policy, now, fair=policy.fair and ids is None)
            claimed = []
            claimer = worker_id.current()
            for job in due[:limit]:
                self._lease_worker[job.id] = claimer
                if started:
                    self._unstarted.discard(job.id)
                else:
                    self._unstarted.add(job.id)
                leased = self._update(
                    job,
                    state=JobState.RUNNING,
                    attempts=job.attempts + 1,
                    lease_token=new_lease_token(),
                    lease_expires_at=expires,
                    started_at=now,
                    updated_at=now,
                )
                # The claimer's own payload, as every other store decodes one per claim:
                # a handler writing into its payload (or ctx.job's) wrote into the kept
                # job, and the next attempt and GET /status saw the writes.
                claimed.append(leased.model_copy(update={"payload": deepcopy(leased.payload)}))
            return claimed

    def _admit(
        self, due: list[Job], limit: int, policy: ClaimPolicy, now: datetime, fair: bool
    ) -> list[Job]:
        """The due jobs (best first) the policy lets start now, at most `limit`."""
        running: dict[str, int] = {}
        for job in self._jobs.values():
            if job.state is JobState.RUNNING:
                for key in limit_keys(job.queue, job.type):
                    running[key] = running.get(key, 0) + 1
        started: dict[str, int] = {}
        for lim in policy.rate_limits():
            assert lim.rate is not None
            window_start = now - timedelta(seconds=lim.rate.window)
            starts = self._starts.setdefault(lim.key, deque())
            while starts and starts[0] <= window_start:
                starts.popleft()
            if starts and (starts[-1] - now).total_seconds() > STEP_BACK:
                # recorded before the clock stepped back: they count as starting now
                self._starts[lim.key] = starts = deque(min(t, now) for t in starts)
            started[lim.key] = len(starts)
        admission = Admission(policy, running, started)
        if fair:
            by_tenant: dict[str, list[Job]] = {}
            for job in due:
                by_tenant.setdefault(job.tenant, []).append(job)
            pick = fair_pick(
                by_tenant,
                self._passes,
                self._fair_clock,
                policy,
                by_tenant.__getitem__,
                lambda j: admission.admit(j.id, j.queue, j.type),
                limit,
            )
            self._passes.update(pick.passes)
            self._fair_clock = pick.clock
            chosen = pick.chosen
        else:
            chosen = []
            for job in due:
                if len(chosen) >= limit:
                    break
                if admission.admit(job.id, job.queue, job.type):
                    chosen.append(job)
        for job in chosen:
            for key in admission.rate_starts(job.queue, job.type):
                self._starts.setdefault(key, deque()).append(now)
        return chosen

    def take_tokens(self, key: str, rate: float, burst: int, cost: int = 1) -> float:
        now = self.clock.now()
        with self._lock:
            tokens, at = self._buckets.get(key, (float(burst), now))
            elapsed, stamp = bucket_stamp(at.timestamp(), now.timestamp())
            tokens = refill(tokens, elapsed, rate, burst)
            left, wait = take(tokens, rate, cost)
            self._buckets[key] = (left, from_epoch(stamp))
            return wait

    def finish(self, completions: Sequence[Completion]) -> list[bool]:
        now = self.clock.now()
        applied = []
        with self._lock:
            for c in completions:
                job = self._jobs.get(c.job_id)
                if (
                    job is None
                    or job.state is not JobState.RUNNING
                    or job.lease_token != c.lease_token
                ):
                    applied.append(False)
                    continue
                terminal = c.state is not JobState.RETRYING
                self._update(
                    job,
                    state=c.state,
                    result=c.result if c.state is JobState.SUCCEEDED else None,
                    last_error=c.error,
                    run_at=c.retry_at if c.retry_at else job.run_at,
                    lease_token=None,
                    lease_expires_at=None,
                    updated_at=now,
                    finished_at=now if terminal else None,
                )
                self._bump(job, *completion_events(c.state))
                self._lease_worker.pop(job.id, None)
                self._unstarted.discard(job.id)
                if c.attempt is not None:
                    self._record(job.id, c.attempt)
                if terminal:
                    self._outbox(job, c.state, now)
                applied.append(True)
        return applied

    def start(self, leases: Sequence[tuple[str, str]]) -> list[bool]:
        now = self.clock.now()
        marked = []
        with self._lock:
            for job_id, lease_token in leases:
                job = self._jobs.get(job_id)
                live = (
                    job is not None
                    and job.state is JobState.RUNNING
                    and job.lease_token == lease_token
                    and job.lease_expires_at is not None
                    and job.lease_expires_at > now
                )
                if live:
                    self._unstarted.discard(job_id)
                marked.append(live)
        return marked

    def extend_lease(self, job_id: str, lease_token: str, lease_seconds: float) -> bool:
        return self.extend_leases([(job_id, lease_token)], lease_seconds)[0]

    def extend_leases(self, leases: Sequence[tuple[str, str]], lease_seconds: float) -> list[bool]:
        now = self.clock.now()
        with self._lock:
            return [self._extend(job_id, token, lease_seconds, now) for job_id, token in leases]

    def _extend(self, job_id: str, lease_token: str, lease_seconds: float, now: datetime) -> bool:
        """Under the lock: renew one lease while it is live and the token's."""
        job = self._jobs.get(job_id)
        if job is None or job.state is not JobState.RUNNING or job.lease_token != lease_token:
            return False
        if job.lease_expires_at is not None and job.lease_expires_at <= now:
            return False
        self._update(job, lease_expires_at=now + timedelta(seconds=lease_seconds), updated_at=now)
        return True

    def cancel(self, job_id: str, tenant: str | None = None) -> Job:
        now = self.clock.now()
        with self._lock:
            job = self.get(job_id, tenant)
            if job is None:
                raise JobNotFound("job not found", {"id": job_id})
            if job.state not in WAITING_STATES:
                raise InvalidTransition(
                    f"a {job.state.value} job cannot be cancelled", {"state": job.state.value}
                )
            self._bump(job, "cancelled")
            self._outbox(job, JobState.CANCELLED, now)
            return self._update(job, state=JobState.CANCELLED, updated_at=now, finished_at=now)

    def list_jobs(self, query: JobQuery) -> JobPage:
        limit = check_limit(query.limit)
        after = decode_cursor(query.cursor, query.newest_first) if query.cursor else None
        with self._lock:
            jobs = [
                j
                for j in self._jobs.values()
                if (query.tenant is None or j.tenant == query.tenant)
                and (query.state is None or j.state is query.state)
                and (query.queue is None or j.queue == query.queue)
                and (query.type is None or j.type == query.type)
                and (
                    after is None
                    or (
                        (to_micros(j.created_at), j.id) < after
                        if query.newest_first
                        else (to_micros(j.created_at), j.id) > after
                    )
                )
            ]
        jobs.sort(key=lambda j: (j.created_at, j.id), reverse=query.newest_first)
        page = jobs[:limit]
        more = len(jobs) > limit
        cursor = (
            encode_cursor(page[-1].created_at, page[-1].id, query.newest_first)
            if more and page
            else None
        )
        return JobPage(page, cursor)

    def redrive(
        self,
        job_ids: Sequence[str],
        tenant: str | None = None,
        cap: Backlog | None = None,
        attempts: RedriveAttempts | None = None,
    ) -> list[Job]:
        now = self.clock.now()
        moved = []
        with self._lock:
            if cap is not None:  # under the lock every write takes
                dead = [
                    i
                    for i in dict.fromkeys(job_ids)
                    if (found := self.get(i, cap.tenant)) is not None
                    and found.state is JobState.DEAD
                ]
                job_ids = redrive_fit(cap, self.waiting_count(cap.tenant), dead)
            for job_id in job_ids:
                job = self.get(job_id, tenant)
                if job is None or job.state is not JobState.DEAD:
                    continue
                moved.append(
                    self._update(
                        job,
                        state=JobState.QUEUED,
                        attempts=0,
                        max_attempts=job.max_attempts
                        if attempts is None
                        else attempts.cut(job.type, job.max_attempts),
                        run_at=now,
                        result=None,
                        finished_at=None,
                        updated_at=now,
                    )
                )
            self._bump_epochs(job.tenant for job in moved)
        if moved:
            self.notifier.notify()
        return moved

    def counts(self) -> dict[tuple[str, JobState], int]:
        out: dict[tuple[str, JobState], int] = {}
        with self._lock:
            for job in self._jobs.values():
                key = (job.queue, job.state)
                out[key] = out.get(key, 0) + 1
        return out

    def counters(self) -> dict[CounterKey, int]:
        with self._lock:
            return dict(self._counters)

    def queue_totals(self, keep: Sequence[str], busiest: int) -> QueueTotals:
        # Read from the ledger the transitions keep, under the lock, so counters and
        # counts are of one moment; counters() and counts() stay full readings (the
        # reference fold the contract tests compare this with).
        with self._lock:
            return self._ledger.totals(keep, busiest)

    def next_due_at(self, queues: Sequence[str] | None = None) -> datetime | None:
        with self._lock:
            times = [
                j.run_at if j.state in WAITING_STATES else j.lease_expires_at
                for j in self._jobs.values()
                if (queues is None or j.queue in queues)
                and (j.state in WAITING_STATES or j.state is JobState.RUNNING)
            ]
        present = [t for t in times if t is not None]
        return min(present) if present else None

    def purge(self, finished_before: datetime, limit: int = 1000) -> int:
        with self._lock:
            doomed = [
                j
                for j in self._jobs.values()
                if j.terminal and j.finished_at is not None and j.finished_at < finished_before
            ][:limit]
            for job in doomed:
                del self._jobs[job.id]
                self._ledger.moved(job.queue, job.state, None)
                self._history.pop(job.id, None)
                self._forget_webhooks(job.id)
                if job.idempotency_key is not None:
                    self._idem.pop((job.tenant, job.idempotency_key), None)
            self._bump_epochs(job.tenant for job in doomed)
            stale = minute_of(self.clock.now()) - MINUTES_KEPT
            for key in [k for k in self._minutes if k[2] < stale]:
                del self._minutes[key]
        return len(doomed)

    def cache_epoch(self, tenant: str) -> int:
        with self._lock:
            return self._epochs.get(tenant, 0)

    def _bump_epochs(self, tenants: Iterable[str]) -> None:
        """Each tenant whose jobs changed, once (the caller holds the lock)."""
        for tenant in set(tenants):
            self._epochs[tenant] = self._epochs.get(tenant, 0) + 1

    def attempts(self, job_id: str, tenant: str | None = None) -> list[Attempt] | None:
        with self._lock:
            if self.get(job_id, tenant) is None:
                return None
            return list(self._history.get(job_id, ()))[-self.history_limit :]

    def state_counts(self, tenant: str | None = None) -> dict[tuple[str, JobState], int]:
        out: dict[tuple[str, JobState], int] = {}
        with self._lock:
            for job in self._jobs.values():
                if tenant is None or job.tenant == tenant:
                    key = (job.queue, job.state)
                    out[key] = out.get(key, 0) + 1
        return out

    def waiting_count(self, tenant: str) -> int:
        with self._lock:
            return sum(
                1 for j in self._jobs.values() if j.tenant == tenant and j.state in WAITING_STATES
            )

    def throughput(self, since: datetime, tenant: str | None = None) -> list[MinuteTally]:
        start = minute_of(since)
        totals: dict[tuple[datetime, str], list[int]] = {}
        with self._lock:
            for (owner, queue, minute), (ok, failed) in self._minutes.items():
                if minute >= start and (tenant is None or owner == tenant):
                    tally = totals.setdefault((minute, queue), [0, 0])
                    tally[0] += ok
                    tally[1] += failed
        return [MinuteTally(q, m, ok, bad) for (m, q), (ok, bad) in sorted(totals.items())]

    def discard(self, job_ids: Sequence[str], tenant: str | None = None) -> list[str]:
        gone: list[str] = []
        touched: set[str] = set()
        with self._lock:
            for job_id in dict.fromkeys(job_ids):
                job = self.get(job_id, tenant)
                if job is None or job.state is not JobState.DEAD:
                    continue
                del self._jobs[job_id]
                self._ledger.moved(job.queue, job.state, None)
                self._history.pop(job_id, None)
                self._forget_webhooks(job_id)
                if job.idempotency_key is not None:
                    self._idem.pop((job.tenant, job.idempotency_key), None)
                gone.append(job_id)
                touched.add(job.tenant)
            self._bump_epochs(touched)
        return gone

    def get_by_key(self, tenant: str, idempotency_key: str) -> Job | None:
        with self._lock:
            job_id = self._idem.get((tenant, idempotency_key))
            return None if job_id is None else self.get(job_id, tenant)

    def oldest_due(
        self, queues: Sequence[str] | None = None, tenant: str | None = None
    ) -> dict[str, datetime]:
        now = self.clock.now()
        out: dict[str, datetime] = {}
        with self._lock:
            for job in self._jobs.values():
                if (
                    job.state in WAITING_STATES
                    and job.run_at <= now
                    and (queues is None or job.queue in queues)
                    and (tenant is None or job.tenant == tenant)
                    and (job.queue not in out or job.run_at < out[job.queue])
                ):
                    out[job.queue] = job.run_at
        return out

    def oldest_due_named(self, named: Sequence[str]) -> dict[str, datetime]:
        """What a scrape needs of oldest_due() (see RedisStore.oldest_due_named): the
        `named` queues' oldest due jobs and, of every other queue, only the one whose
        due job is oldest (ties by name): an answer of len(named) + 1 entries however
        many queues hold due jobs. Still one pass over the jobs: this store keeps no
        index of them by time."""
        wanted = set(named)
        now = self.clock.now()
        out: dict[str, datetime] = {}
        other: tuple[datetime, str] | None = None
        with self._lock:
            for job in self._jobs.values():
                if job.state not in WAITING_STATES or job.run_at > now:
                    continue
                queue, at = job.queue, job.run_at
                if queue in wanted:
                    if queue not in out or at < out[queue]:
                        out[queue] = at
                elif other is None or (at, queue) < other:
                    other = (at, queue)
        if other is not None:
            out[other[1]] = other[0]
        return out

    def beat(self, worker: str, queues: Sequence[str] | None, started_at: datetime) -> None:
        now = self.clock.now()
        with self._lock:
            self._beats[worker] = WorkerBeat(
                worker, None if queues is None else tuple(queues), started_at, now
            )
            cutoff = now - timedelta(seconds=history.BEAT_RETENTION_SECONDS)
            for name in [w for w, b in self._beats.items() if b.last_beat < cutoff]:
                del self._beats[name]

    def forget_worker(self, worker: str) -> None:
        with self._lock:
            self._beats.pop(worker, None)

    def live_workers(self, within: float) -> list[WorkerBeat]:
        since = self.clock.now() - timedelta(seconds=within)
        with self._lock:
            live = [b for b in self._beats.values() if b.last_beat >= since]
        return sorted(live, key=lambda b: b.worker)

    # -- the webhook outbox (see base.py) ------------------------------------
    def claim_webhooks(self, limit: int, lease_seconds: float) -> list[Delivery]:
        now = self.clock.now()
        expires = now + timedelta(seconds=lease_seconds)
        with self._lock:
            due = [
                d
                for d in self._deliveries.values()
                if d.state == outbox.PENDING
                and d.next_at is not None
                and d.next_at <= now
                and (d.lease_expires_at is None or d.lease_expires_at <= now)
            ]
            due.sort(key=lambda d: (d.next_at or now, d.created_at, d.id))
            claimed = []
            for d in due[: max(0, limit)]:
                leased = replace(
                    d,
                    attempts=d.attempts + 1,
                    lease_token=new_lease_token(),
                    lease_expires_at=expires,
                )
                self._deliveries[d.id] = leased
                claimed.append(leased)
            return claimed

    def finish_webhook(
        self,
        delivery_id: str,
        lease_token: str,
        outcome: str,
        retry_at: datetime | None = None,
        error: str | None = None,
    ) -> bool:
        if outcome not in outbox.OUTCOMES:
            raise ValueError(f"unknown webhook outcome {outcome!r}")
        now = self.clock.now()
        with self._lock:
            d = self._deliveries.get(delivery_id)
            if d is None or d.state != outbox.PENDING or d.lease_token != lease_token:
                return False
            ended = outcome != outbox.RETRYING
            self._deliveries[d.id] = replace(
                d,
                state=outbox.PENDING if not ended else outcome,
                next_at=None if ended else (retry_at or now),
                lease_token=None,
                lease_expires_at=None,
                finished_at=now if ended else None,
                last_error=outbox.short_error(error),
            )
            return True

    def webhooks(self, job_id: str, tenant: str | None = None) -> list[Delivery]:
        with self._lock:
            if self.get(job_id, tenant) is None:
                return []
            ids = sorted(self._job_deliveries.get(job_id, ()), key=self._age)
            return [self._deliveries[i] for i in ids]

    def webhook_counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        with self._lock:
            for d in self._deliveries.values():
                if d.state in outbox.COUNTED:
                    out[d.state] = out.get(d.state, 0) + 1
        return out

    def close(self) -> None:
        self.notifier.close()


def from_url(url: str, clock: Clock | None = None) -> MemoryStore:
    from urllib.parse import urlsplit

    from chalicelib.storage import url_options

    url_options(urlsplit(url).query, "memory", ())  # it has none: memory://?x=1 is a typo
    return MemoryStore(clock)

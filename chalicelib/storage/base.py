"""The JobStore protocol: the one interface every backend implements.

Every backend passes the same contract suite (tests/contract/). The store is
the truth about each job; *delivery* (how a due job reaches a worker: polling
with wake-ups, or an SQS message) lives beside it in `Notifier`, so the
contract stays the same for SQL stores and for DynamoDB.

Rules every backend keeps:
- `add` is all or nothing; an idempotency key already seen for the same tenant
  returns the existing job (created=False) and stores nothing new. Such a
  result's `callback_url` is the URL stored with that job (None when it has
  none), read in the same lookup, so the service can tell a repeated request
  from a different one (chalicelib/idempotency.py); the same holds for a key
  repeated within one batch (the first job's URL). A created result's
  `callback_url` is None.
- `add(jobs, cap)` and `redrive(ids, tenant, cap)` with a `Backlog` (a tenant's
  backlog quota) count the tenant's waiting jobs in the same atomic step as the
  write: an add whose new jobs (repeats of stored keys are none) do not fit raises
  BacklogFull and stores none of them; a redrive moves the dead jobs that fit, in
  the order named, and raises BacklogFull when none does. Without a cap neither
  reads or runs anything more than before. DynamoDB counts before it writes, not
  atomically (see Backlog).
- `claim` takes due jobs (queued/retrying with run_at <= now), highest
  priority first, then earliest run_at, then earliest created_at, then lowest id
  (so every store takes exact ties, a batch's jobs, in one order), moves them to
  running under a fresh lease token and counts the attempt. It answers them in
  that order, each job once however often `ids` names it. A running job whose
  lease expired is first *reaped* (by every claim, one that can take nothing too:
  limit 0, no queues, no ids): back to retrying (due now), or to dead when that
  was its last attempt; the expired attempt counts as a failure.
- An attempt is spent only once its handler may have started. `claim(...,
  started=False)` (what the worker does) leases the jobs *unstarted*, and the
  claimer calls `start([(id, lease_token), ...])` just before it runs each one
  (False for a job whose lease is not the caller's or has lapsed: do not run
  it). A reaped lease that was never started gives its attempt back, with no
  counter, tally, history entry or webhook: attempts - 1, back to queued (no
  attempt left spent) or retrying, due now (`unstarted_reap`). So a job that
  sat in a dead worker's prefetch, or whose claim's reply was lost, is not
  spent, while one whose handler crashed the worker is (else a poison job
  would loop for ever). A claim with started=True (the default) counts as
  started at once, as before; so does a running job the store cannot tell
  (one claimed before the store kept the mark). So a started claim whose reply
  was lost does spend its jobs' attempts, though no handler ran: the worker
  claims started what goes straight to an idle pool thread, and a job claimed
  so on its last attempt is buried when the reply is lost (found with
  pg_terminate_backend under load; not yet fixed).
- `finish` applies a completion only while the lease token still matches and
  the job is running; otherwise it returns False and changes nothing.
- Counters (enqueued, succeeded, failed, retried, dead, cancelled per queue
  and type) are updated in the same transaction as the transition, so every
  process reads the same system-wide totals.
- `cache_epoch(tenant)` is a number per tenant that changes whenever one of
  that tenant's finished jobs' answers changes: a `redrive` that moves at
  least one of its jobs (dead -> queued) and a `purge` or `discard` that
  deletes at least one of its jobs bump it, in the same transaction (or
  conditional write) as the change, and nothing else moves it (so caches keep
  their entries through ordinary traffic). Only the tenants whose jobs changed
  move: an operator's redrive or purge across tenants bumps each tenant it
  touched, once or more, and leaves every other tenant's epoch as it was; a
  redrive or purge that changed nothing moves none. A tenant never touched
  reads 0, so a store made before epochs were per tenant needs no backfill.
  Finished jobs change in no other way (cancel and finish start from waiting
  or running states), so a reader that saw a tenant's epoch unchanged since it
  read one of that tenant's finished jobs knows its copy is still true.
  Reading it is one cheap, strongly consistent read. HTTP result caches in
  every process re-read each tenant's about once a second
  (chalicelib/api/cache.py).

Attempt history (chalicelib/storage/history.py holds the shared encoding):
- A completion that carries an `attempt` appends it to the job's history in
  the same transaction (or conditional write) as the finish: a refused finish
  (stale lease, unknown job) records nothing, and an applied one always
  records its attempt. A completion without one records nothing.
- A reaped lease appends an attempt with outcome "lease_expired": number =
  the job's attempts, started at the claim, finished at the lease's expiry,
  worker = the id the claiming process recorded with the claim
  (chalicelib/worker_id.py), error = LEASE_EXPIRED_ERROR, next_delay 0 when
  the job goes back to retrying and None when it is buried.
- The history keeps the last N attempts (SPOOL_ATTEMPT_HISTORY, default 25),
  oldest first; older ones are dropped as new ones arrive. It survives a
  redrive (numbers restart at 1 after it) and goes with the job on purge.
- `attempts(id, tenant)` is a separate read: None for an unknown job or
  another tenant's, else the list. `get`, `claim` and `list_jobs` never read
  the history, so the hot paths do not pay for it.
- An entry is held to a size (history.MAX_ENTRY_BYTES; less on DynamoDB):
  a traceback keeps its end, an error message its start.

Workers and due work, for operators and metrics:
- `beat(worker, queues, started_at)` upserts the worker's row with
  last_beat = now (the store's clock); `live_workers(within)` returns the
  workers whose last beat is at most `within` seconds old. Beats older than
  history.BEAT_RETENTION_SECONDS are dropped.
- `oldest_due(queues)` maps each queue that has due waiting jobs
  (queued/retrying with run_at <= now) to the earliest such run_at; queues
  with nothing due are absent. How long the oldest due job has waited is
  now - that time.

The webhook outbox (chalicelib/webhooks/outbox.py defines a Delivery):
- `NewJob.callback_url` is stored with the job. When a job that has one
  reaches a terminal state (finish to succeeded or dead, a reap that buries
  it, cancel), one pending delivery (a fresh `msg_` id, event
  "job.<state>", attempts 0, due now) is written in the same transaction (or
  TransactWriteItems) as the transition: a refused transition writes none, an
  applied one always writes one. A retry writes none. A job without a
  callback URL never gets one.
- `claim_webhooks(limit, lease_seconds)` leases up to `limit` pending
  deliveries due now (next_at <= now, and no lease or an expired one),
  earliest next_at first (then created_at, then id), counting the attempt; a
  lease that expired (the worker died mid-delivery) makes the delivery claimable
  again under the same id, so it is delivered at least once and never lost.
- `finish_webhook(id, lease_token, outcome, retry_at, error)` applies only
  while the lease token matches a pending delivery (else False, nothing
  changes): "delivered" and "failed" end it (finished_at = now), "retrying"
  leaves it pending, due at retry_at, without a lease.
- `webhooks(job_id, tenant)` lists the job's deliveries, oldest first: by
  created_at, ties by id, never by the order they were written (a job that dies,
  is redriven and succeeds on one clock reading has two deliveries in one
  microsecond) ([] for none, an unknown job or another tenant's);
  `webhook_counts()` maps "pending" and "failed" to how many deliveries are in
  that state (absent when none). Delivered ones are not counted: they are the
  normal case (up to webhook_history per job, until purged), and counting them
  would cost a DynamoDB scrape a scan.
- A job keeps its newest `webhook_history` delivered or failed deliveries
  (newest in the listing's order: by created_at, ties by id;
  SPOOL_WEBHOOK_HISTORY read when the store opens, outbox.kept_finished, default
  25, or the constructor's `webhook_history`): the transition that writes a new
  one deletes the job's finished ones beyond those in the same transaction. A
  pending one is never deleted, so every delivery owed is still made.
- A purge deletes the deliveries of the jobs it deletes, in its transaction.

The scrape's read (chalicelib/storage/queue_totals.py holds the rule and `fold`,
its reference):
- `queue_totals(keep, busiest)` is the counters and the per-state counts with
  every queue that is not named summed under `_other`: named are the known
  queues (those with a counter row) among `keep` and the `busiest` others by
  jobs ever enqueued, ties by name. Its cost must not grow with every queue
  name ever used where the store can help it: SQLite keeps a per-queue volume
  (ranked by an index) and per-(type, event) totals beside the counters,
  written by triggers in the counters' own transaction, so `_other` is the
  totals less the named queues' rows, and drops a per-state count row when it
  reaches zero; Postgres folds the counter and count rows changed since the
  last scrape into the same summaries at each scrape (migration 0008), so no
  enqueue writes or waits on a per-queue row; Redis keeps them in the scripts
  that bump the counters (a sorted set of volumes, hashes of totals) and
  keeps each queue's (and each tenant's queue's) oldest waiting job in sorted
  sets, so its `oldest_due` reads entries, never walks queues, and its
  `oldest_due_named(named)` answers a scrape with the named queues' entries
  and only the oldest other (what `_other` shows); the memory and
  DynamoDB stores fold their full reading (`fold`).

The dashboard's reads (chalicelib/ui/), each answered without scanning jobs:
- `state_counts(tenant)` is jobs per (queue, state) of one tenant (None: all),
  zero counts absent. It is kept as counts that move in the same transaction
  as every insert, state change and delete (SQL stores: triggers), so it always
  equals a count of the jobs.
- `waiting_count(tenant)` is the tenant's queued and retrying jobs, what the
  backlog quota of SPOOL_TENANT_LIMITS caps, asked on every enqueue of a capped
  tenant: it reads kept counts, or (DynamoDB, which keeps none per tenant) counts
  the tenant's waiting index, never the entries of its finished jobs.
- `throughput(since, tenant)` is, per (queue, UTC minute) from `since`'s minute
  on, the attempts that ended in that minute by the store's clock: succeeded,
  and failed (a finish to retrying or dead, or a reaped lease). Recorded with
  the finish or reap; absent when zero; ordered by (minute, queue). Purging
  jobs keeps the tallies; tallies older than MINUTES_KEPT may be dropped.
- `oldest_due(queues, tenant=...)` narrows to one tenant's jobs.
- `get_by_key(tenant, key)` is the tenant's job stored under that idempotency
  key, or None.
- `discard(ids, tenant)` deletes those of the ids that are dead jobs (of the
  tenant, when given), with their history and idempotency key, bumping the
  `cache_epoch` of each tenant it deleted from in the same transaction (as
  purge does);
  it returns the ids it deleted, in the order asked, each once. Any other job is
  left alone.
- `JobQuery.newest_first` lists in (created_at, id) descending order; the
  cursor then continues below the last row returned.
- `JobQuery.bodies=False` lists the same jobs in the same pages, every other
  field as stored; the payload and result may be left out ({} and None) and a
  store that can should not read them (the dashboard's lists show neither).

Limits and fair turns (`claim(..., policy=...)`, chalicelib/limits.py):
- A job whose queue or type has a concurrency limit starts only while fewer
  than N jobs of that queue or type are running (reaped leases first free
  theirs). A rate limit lets at most N jobs of it start in any window of its
  length: the store records each start in the claim's transaction and counts
  the starts in (now - window, now]. Both hold across every worker and process:
  the check and the claim are one atomic step.
- A held job is not touched: no attempt, no lease, same state and run_at. The
  claim records a `Hold` in `policy.holds` for it, so the worker can count
  holds and the SQS consumer can return the message with a delay.
- `fair`: due jobs are taken in stride turns by tenant (limits.fair_pick), each
  tenant's pass and the last turn kept by the store so turns carry across
  claims and workers; within a tenant, priority then run_at order. A tenant's
  weight (policy.weights) gives it that many turns per round.
- Without a policy (or with an empty one) claim behaves as before and reads
  nothing more.
- `take_tokens(key, rate, burst, cost)` is a token bucket shared by every
  process (per-tenant enqueue limits): the bucket holds at most `burst` tokens,
  refills at `rate` per second by the store's clock, and starts full. If it
  holds at least `cost` tokens they are taken and 0.0 is returned; otherwise
  nothing is taken and the answer is the seconds until `cost` tokens will be
  there. A cost above the burst is never granted and takes nothing: its answer,
  (cost - tokens) / rate, says how far the bucket is from full (chalicelib/held_line.py
  reads a rate's line of held jobs so). Atomic across processes.
  A negative cost gives -cost tokens back (0.0): a redrive returns those of ids
  it did not move; the next take's refill keeps the bucket at most `burst`.

Optional attributes a worker looks for: `notifier` (a Notifier, for prompt
wake-ups), `concurrent_writes = True` (calls from two threads run on
separate connections, so completions may be written while a claim runs) and
`timings(ids)` (a JobTiming per id that names a readable job, read without the
payload or result: the SQS worker's deadline check, worker._defer_what_cannot_finish,
needs only a job's type, state and times, and DynamoDB's `get` would fetch a payload
or result kept in S3 for it; `job_timings` below falls back to `get`).
And one the periodic scheduler looks for: `finished_kept_seconds` (a store that
deletes finished jobs, with their idempotency keys, that long after they finish, as
DynamoDB's TTL does): a tick at least that late is not fired, as its job may have
been deleted already (chalicelib/periodic.py).
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol, runtime_checkable

from chalicelib.clock import Clock
from chalicelib.errors import BadRequest, JobUnreadable, SpoolError, StoreUnavailable
from chalicelib.jsonstrict import replaced_surrogates
from chalicelib.limits import ClaimPolicy
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
    JobTiming,
    MinuteTally,
    NewJob,
    WorkerBeat,
)
from chalicelib.redrive_attempts import RedriveAttempts
from chalicelib.storage.queue_totals import QueueTotals
from chalicelib.webhooks.outbox import Delivery

MAX_LIST_LIMIT = 1000
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# Throughput tallies are kept at least this long (the dashboard reads the last hour).
MINUTES_KEPT = timedelta(days=1)
LEASE_EXPIRED_ERROR = "lease expired: the worker stopped before finishing the attempt"


class StoreUnreachable(StoreUnavailable):
    """A store that could not be reached when it was opened.

    The message is for the operator who starts Spool: one line naming the
    store (its URL with the password masked), the reason, and what to check.
    HTTP clients get only `public_message` (routes.handle swaps it in), because
    the URL names hosts and databases they have no business knowing.
    """

    public_message = "the job store cannot be reached; try again shortly"


@dataclass(frozen=True)
class Backlog:
    """A cap an add (and a redrive) keeps on one tenant's waiting jobs: SPOOL_TENANT_LIMITS'
    backlog. `more` counts jobs of the same request that a later add will store (the
    unkeyed half of a mixed batch, Service.add_prepared), so the first add refuses a
    batch that cannot fit whole.

    The count and the insert are one atomic step wherever the store allows it, so
    the cap holds across every process: SQLite counts the tenant's kept counts in the
    add's BEGIN IMMEDIATE transaction; Postgres takes a transaction-level advisory
    lock keyed by the tenant, then counts and inserts; Redis counts inside its add
    script; the memory store under its lock. DynamoDB counts its waiting index (an
    eventually consistent GSI) and then adds, with no transaction spanning both: there
    the cap holds per process only (docs/architecture.md)."""

    tenant: str
    most: int
    more: int = 0

    def refuses(self, waiting: int, fresh: int) -> BacklogFull | None:
        """The refusal for adding `fresh` jobs beside `waiting` ones, or None: fits."""
        jobs = fresh + self.more
        if jobs == 0 or waiting + jobs <= self.most:
            return None
        return BacklogFull(waiting, jobs, self.most)


class BacklogFull(SpoolError):
    """An add or redrive that would take a tenant's waiting jobs past its Backlog cap:
    nothing of it was stored. The HTTP edge answers it as the backlog's 429
    (chalicelib/api/throttle.py)."""

    code = "rate_limited"
    status = 429

    def __init__(self, waiting: int, jobs: int, backlog: int) -> None:
        super().__init__(
            f"tenant backlog is full: {waiting} jobs waiting, at most {backlog}",
            {"waiting": waiting, "backlog": backlog, "jobs": jobs},
        )
        self.waiting = waiting
        self.jobs = jobs
        self.backlog = backlog


def redrive_fit(cap: Backlog, waiting: int, dead: Sequence[str]) -> list[str]:
    """The ids a capped redrive moves: of the dead jobs named (in the caller's order),
    as many as the room left beside `waiting`. BacklogFull when there is no room for
    even one of them, so a redrive refused whole says why."""
    room = cap.most - waiting
    if dead and room < 1:
        raise BacklogFull(waiting, len(dead), cap.most)
    return list(dead[: max(room, 0)])


def epoch_after_emptyings(epoch: int, emptied: int) -> int:
    """JobStore.cache_epoch's answer once the store was emptied under this process
    `emptied` times (Redis restarted empty, Postgres's tables made anew, DynamoDB's
    table made again): a never-touched tenant reads 0 again there, the value the
    caches held, so after an emptying the epoch is negative and distinct for each
    (emptied, epoch)."""
    return epoch if emptied == 0 else -(emptied << 40) - 1 - epoch


@runtime_checkable
class JobStore(Protocol):
    clock: Clock

    def add(self, jobs: Sequence[NewJob], cap: Backlog | None = None) -> list[AddResult]:
        """Store the jobs, all or none (the rules above). With a `cap`, the jobs this
        add would create (repeats of stored keys are none) must fit the cap's tenant's
        backlog: else BacklogFull is raised and nothing is stored (see Backlog)."""
        ...

    def get(self, job_id: str, tenant: str | None = None) -> Job | None: ...

    def check_writable(self) -> None:
        """Raise StoreUnavailable when the store already knows a write would fail now
        (SQLite: the disk is full, the file was deleted). /health calls it after a read,
        so a store that still answers reads but cannot take jobs is not reported healthy.
        A store that learns this only by writing does nothing here, or asks cheaply
        (SQLite takes and lets go its write lock, waiting at most a second)."""
        ...

    def claim(
        self,
        limit: int,
        lease_seconds: float,
        queues: Sequence[str] | None = None,
        ids: Sequence[str] | None = None,
        policy: ClaimPolicy | None = None,
        started: bool = True,
    ) -> list[Job]:
        """Lease up to `limit` due jobs; with `ids`, only those (used by SQS delivery).

        With a `policy` (chalicelib/limits.py), only jobs its limits let start
        now, taken in fair turns by tenant when it says so (not with `ids`).
        With started=False the jobs are leased unstarted until `start`.
        Each job's payload is the claimer's own: a handler that writes into it changes
        nothing stored (tests/test_chaos_s46_payloads.py)."""
        ...

    def start(self, leases: Sequence[tuple[str, str]]) -> list[bool]:
        """Mark claimed jobs started, each (job id, lease token): from now on a lapse
        of that lease spends the attempt. False where the lease is not live."""
        ...

    def finish(self, completions: Sequence[Completion]) -> list[bool]: ...

    def extend_lease(self, job_id: str, lease_token: str, lease_seconds: float) -> bool: ...

    def extend_leases(self, leases: Sequence[tuple[str, str]], lease_seconds: float) -> list[bool]:
        """`extend_lease` for each (job id, lease token), in one write where the store
        can (SQLite, Postgres, memory, one script on Redis; DynamoDB one conditional write
        each): a
        worker renews all the leases it holds at once, so a slow write turn is waited
        out once, not once per job. Each answer is what extend_lease would answer."""
        ...

    def cancel(self, job_id: str, tenant: str | None = None) -> Job:
        """Cancel a waiting job. Raises JobNotFound, or InvalidTransition if running/finished."""
        ...

    def list_jobs(self, query: JobQuery) -> JobPage: ...

    def redrive(
        self,
        job_ids: Sequence[str],
        tenant: str | None = None,
        cap: Backlog | None = None,
        attempts: RedriveAttempts | None = None,
    ) -> list[Job]:
        """Move dead jobs back to queued with a fresh attempt budget; skips others.
        Answers the jobs it moved in the order asked, each once. With a `cap` (the jobs
        are the cap's tenant's), only the first of the dead ones that fit its backlog
        move, counted in the same atomic step (redrive_fit); BacklogFull when there is a
        dead one and no room. With `attempts`, each moved job's max_attempts is cut to
        its bound (RedriveAttempts.cut) in the same write."""
        ...

    def counts(self) -> dict[tuple[str, JobState], int]:
        """Number of jobs per (queue, state)."""
        ...

    def counters(self) -> dict[CounterKey, int]: ...

    def queue_totals(self, keep: Sequence[str], busiest: int) -> QueueTotals:
        """The counters and counts with the queues not named summed under `_other`:
        named are the known queues in `keep` and the `busiest` others (see the rule)."""
        ...

    def next_due_at(self, queues: Sequence[str] | None = None) -> datetime | None:
        """When the next waiting job or lease expiry falls due, so idle workers sleep exactly
        (of the queues named: None when `queues` is empty)."""
        ...

    def purge(self, finished_before: datetime, limit: int = 1000) -> int:
        """Delete up to `limit` terminal jobs finished before the given time."""
        ...

    def cache_epoch(self, tenant: str) -> int:
        """The tenant's invalidation epoch: changes with every redrive or purge that
        changed one of the tenant's jobs (0 for a tenant never touched)."""
        ...

    def attempts(self, job_id: str, tenant: str | None = None) -> list[Attempt] | None:
        """The job's recorded attempts, oldest first (the last N); None if no such job."""
        ...

    def oldest_due(
        self, queues: Sequence[str] | None = None, tenant: str | None = None
    ) -> dict[str, datetime]:
        """Per queue, the earliest run_at among waiting jobs (queued/retrying) already due."""
        ...

    def state_counts(self, tenant: str | None = None) -> dict[tuple[str, JobState], int]:
        """Jobs per (queue, state) of one tenant (None: every tenant), from kept counts."""
        ...

    def waiting_count(self, tenant: str) -> int:
        """The tenant's waiting jobs (queued or retrying, delayed ones too): what a
        backlog quota caps. Its cost grows with those jobs, never with the tenant's
        finished ones (kept counts; on DynamoDB a count of its waiting index)."""
        ...

    def throughput(self, since: datetime, tenant: str | None = None) -> list[MinuteTally]:
        """Attempts that ended per (queue, minute) since `since`'s minute, oldest first."""
        ...

    def get_by_key(self, tenant: str, idempotency_key: str) -> Job | None:
        """The tenant's job stored under an idempotency key, or None."""
        ...

    def discard(self, job_ids: Sequence[str], tenant: str | None = None) -> list[str]:
        """Delete the dead jobs among these ids (the tenant's, when given); the ids deleted."""
        ...

    def take_tokens(self, key: str, rate: float, burst: int, cost: int = 1) -> float:
        """Take `cost` tokens from a shared bucket; 0.0, or the seconds to wait."""
        ...

    def beat(self, worker: str, queues: Sequence[str] | None, started_at: datetime) -> None:
        """Record that a worker is alive now (upsert)."""
        ...

    def live_workers(self, within: float) -> list[WorkerBeat]:
        """Workers whose last beat is no older than `within` seconds."""
        ...

    def forget_worker(self, worker: str) -> None:
        """A worker that stopped cleanly is no longer live (its beat is dropped), so a
        fleet scaled to zero shows no live worker at once, not a minute later."""
        ...

    def claim_webhooks(self, limit: int, lease_seconds: float) -> list[Delivery]:
        """Lease up to `limit` due pending webhook deliveries (see the outbox rules)."""
        ...

    def finish_webhook(
        self,
        delivery_id: str,
        lease_token: str,
        outcome: str,
        retry_at: datetime | None = None,
        error: str | None = None,
    ) -> bool:
        """Record how a delivery attempt ended: "delivered", "retrying" or "failed"."""
        ...

    def webhooks(self, job_id: str, tenant: str | None = None) -> list[Delivery]:
        """The job's webhook deliveries, oldest first (by created_at, then id)."""
        ...

    def webhook_counts(self) -> dict[str, int]:
        """How many deliveries are pending and failed (outbox.COUNTED)."""
        ...

    def close(self) -> None: ...


class Notifier(Protocol):
    """Wakes idle workers when work arrives (delivery, kept out of the contract)."""

    def notify(self) -> None: ...

    def wait(self, timeout: float) -> bool:
        """Block until notified or timeout; True when notified."""
        ...

    def close(self) -> None: ...


def job_timings(store: JobStore, job_ids: Sequence[str]) -> dict[str, JobTiming]:
    """Each readable job's JobTiming, by the store's own `timings` where it has one
    (no payload or result read), else one `get` per id. A job that is gone is absent;
    a record a store cannot read raises JobUnreadable from `get` (the fallback) and is
    absent from `timings`, as the caller leaves both to the claim."""
    read = getattr(store, "timings", None)
    if callable(read):
        found: dict[str, JobTiming] = read(job_ids)
        return found
    timings: dict[str, JobTiming] = {}
    for job_id in job_ids:
        try:
            job = store.get(job_id)
        except JobUnreadable:
            continue
        if job is not None:
            timings[job_id] = JobTiming(
                job.id, job.type, job.state, job.run_at, job.lease_expires_at
            )
    return timings


def completion_events(state: JobState) -> tuple[str, ...]:
    """The counters a completion bumps."""
    if state is JobState.SUCCEEDED:
        return ("succeeded",)
    if state is JobState.RETRYING:
        return ("failed", "retried")
    return ("failed", "dead")


def unstarted_reap(attempts: int, now: datetime) -> dict[str, object]:
    """The fields of a job whose lease lapsed before its claimer started it: the
    attempt the claim counted is given back, and the job waits again, due now.
    Queued when that leaves no attempt spent (it never ran), else retrying."""
    left = max(attempts - 1, 0)
    return {
        "state": JobState.QUEUED if left == 0 else JobState.RETRYING,
        "attempts": left,
        "run_at": now,
        "lease_token": None,
        "lease_expires_at": None,
    }


def log_buried_by_reap(
    job_id: str,
    tenant: str,
    type_: str,
    queue: str,
    attempts: int,
    max_attempts: int,
    worker: str | None = None,
) -> None:
    """The `dead` line for a job whose last attempt's lease expired.

    The claim that reaps it buries it, so no worker ever sees that outcome to log
    it: the store writes the line, with the same fields a worker's would carry."""
    import logging

    from chalicelib.logs import job_line

    job = {
        "job_id": job_id,
        "tenant": tenant,
        "type": type_,
        "queue": queue,
        "attempt": attempts,
        "max_attempts": max_attempts,
    }
    job_line(
        logging.ERROR,
        "dead",
        job,
        error=LEASE_EXPIRED_ERROR,
        error_type="LeaseExpired",
        worker=worker,
    )


def utf8_text(text: str | None) -> str | None:
    """Text a UTF-8 store can hold. A handler's error message may carry a lone
    surrogate, which UTF-8 cannot encode: each becomes U+FFFD, rather than the
    whole finish failing (SQLite) or being refused forever (DynamoDB)."""
    return None if text is None else replaced_surrogates(text)


def minute_of(when: datetime) -> datetime:
    """The start of the UTC minute holding `when` (throughput tallies are per minute)."""
    return EPOCH + timedelta(minutes=(when - EPOCH) // timedelta(minutes=1))


_MICROSECOND = timedelta(microseconds=1)


def to_micros(when: datetime) -> int:
    """Exact integer microseconds since the epoch: comparable without float error.
    (The divisor is built once: a timedelta made per call was two thirds of its cost.)"""
    return (when - EPOCH) // _MICROSECOND


def micros_of(seconds: float) -> int:
    """A duration in seconds as whole microseconds, rounded as timedelta(seconds=...)
    rounds it: `int(seconds * 1_000_000)` truncated, and 2.01 * 1e6 is 2009999.99...,
    so a lease of 2.01 s ended a microsecond early on the stores that counted so."""
    return timedelta(seconds=seconds) // _MICROSECOND


def from_micros(micros: int) -> datetime:
    return EPOCH + timedelta(microseconds=micros)


def encode_cursor(created_at: datetime, job_id: str, newest_first: bool = False) -> str:
    """Lists are ordered by (created_at, id); the cursor is the last pair seen, and
    the order it was seen in: newest-first cursors end in NEWEST_MARK."""
    mark = NEWEST_MARK if newest_first else ""
    raw = f"{to_micros(created_at)}|{job_id}{mark}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str, newest_first: bool = False) -> tuple[int, str]:
    """Parse an opaque cursor; a malformed one is the client's error, not ours.

    Only a cursor as encode_cursor writes it is taken: int() and base64 would also
    read " 1", "1_000", other scripts' digits, padding and stray characters, so a
    made-up cursor must encode back to itself, with plain digits and an id of
    printable characters. One made for the other order is refused too: read in this
    one it named the jobs on the wrong side of its place (GET /jobs lists oldest first,
    the dashboard newest first), a page of jobs already seen or none, without an error."""
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        text = base64.urlsafe_b64decode(padded.encode()).decode()
        made_newest = text.endswith(NEWEST_MARK)
        if made_newest:
            text = text[: -len(NEWEST_MARK)]
        created, job_id = text.split("|", 1)
        micros = int(created)
    except (ValueError, binascii.Error, UnicodeDecodeError) as exc:
        raise BadRequest(BAD_CURSOR, {"cursor": cursor}) from exc
    mark = NEWEST_MARK if made_newest else ""
    canonical = base64.urlsafe_b64encode(f"{micros}|{job_id}{mark}".encode()).decode()
    if canonical.rstrip("=") != cursor or micros < 0 or not _CURSOR_ID.fullmatch(job_id):
        raise BadRequest(BAD_CURSOR, {"cursor": cursor})
    if made_newest != newest_first:
        raise BadRequest(OTHER_ORDER, {"cursor": cursor})
    return micros, job_id


# What a job id may be in a cursor: printable ASCII, no separator or space.
_CURSOR_ID = re.compile(r"[!-{}~]{1,200}")
# The fix is in the message: a cursor is only ever one a listing handed out, unchanged.
BAD_CURSOR = "invalid cursor: give back a next_cursor from the page before, as it was sent"
# What ends the text of a newest-first list's cursor: "|" is in no cursor's job id.
NEWEST_MARK = "|newest"
OTHER_ORDER = (
    "this cursor is from a list in the other order (GET /jobs and GET /dlq list oldest "
    "first, the dashboard's GET /ui/api/jobs newest first): give back a next_cursor "
    "this list handed out"
)


def check_limit(limit: int) -> int:
    if limit < 1 or limit > MAX_LIST_LIMIT:
        raise BadRequest(f"limit must be between 1 and {MAX_LIST_LIMIT}", {"limit": limit})
    return limit


def waiting_in(counts: Mapping[tuple[str, JobState], int]) -> int:
    """The waiting jobs among state_counts' counts."""
    return sum(n for (_, state), n in counts.items() if state in WAITING_STATES)

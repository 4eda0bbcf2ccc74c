"""Every lifecycle operation at once, on every store: the counts must still be the rows.

Workers claim (started or not), start, finish (succeeded, retrying, dead) or abandon
their leases; beside them other threads cancel, redrive (one job, or a batch naming
jobs in any state, with and without a tenant), discard dead jobs, purge finished ones
and move the test clock past the leases, so a reap runs inside a claim while a
finish, a cancel or a redrive of the same job is in flight. Each thread does a fixed
number of steps (no timing decides the outcome); the interleaving is whatever the
threads make of it, and what is asserted holds for every interleaving:

- the kept counts (counts, state_counts, a tenant's state_counts and waiting_count,
  queue_totals: what /metrics shows) equal a recount from the jobs themselves, and
  /metrics's `spool_jobs` gauges equal it too;
- the counters agree with what the racing calls were told: one `succeeded` and one
  `cancelled` per accepted finish and cancel, `failed` = `retried` + `dead`;
- a dead job moves back once per death: the redrives' answers add up to the deaths
  not still dead, discarded or purged (two redrives racing for one job move it once);
- no job is lost: every job not discarded or purged is still there.

The s62 chaos pass (helper E) drove the same with real `spool serve` and `spool
worker` processes (SIGKILLed mid-run) on SQLite, Postgres, Redis, DynamoDB on
moto_server and the memory store, and found the counts and gauges equal to a
recount there too; this keeps the store-level race in the suite.
"""

from __future__ import annotations

import random
import threading
from collections import Counter
from datetime import timedelta

import pytest

from chalicelib.api.metrics import Metrics
from chalicelib.clock import FakeClock
from chalicelib.config import Settings
from chalicelib.errors import InvalidTransition, JobNotFound
from chalicelib.job_state import JobState
from chalicelib.models import Completion, Job
from chalicelib.storage.base import JobStore
from tests.factories import new_job
from tests.threads import run_together

LEASE = 30.0
JOBS = 40
TENANTS = ("t1", "t2")
QUEUES = ("qa", "qb")
WORKERS = 2
MEDDLERS = 2
STEPS = 60  # each thread's steps: enough for every job to pass several states
WAITING = (JobState.QUEUED, JobState.RETRYING)


class Tally:
    """What the racing calls were told, summed across threads."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.told: Counter[str] = Counter()

    def add(self, what: str, count: int = 1) -> None:
        with self.lock:
            self.told[what] += count


def _finish(store: JobStore, clock: FakeClock, job: Job, rng: random.Random, tally: Tally) -> None:
    assert job.lease_token is not None
    state = rng.choice([JobState.SUCCEEDED, JobState.RETRYING, JobState.DEAD])
    completion = Completion(
        job.id,
        job.lease_token,
        state,
        result={"by": "worker"} if state is JobState.SUCCEEDED else None,
        error=None if state is JobState.SUCCEEDED else "planned",
        retry_at=clock.now() if state is JobState.RETRYING else None,
    )
    if store.finish([completion]) == [True]:
        tally.add(state.value)


def _work(store: JobStore, clock: FakeClock, seed: int, tally: Tally) -> None:
    rng = random.Random(seed)
    for _ in range(STEPS):
        started = rng.random() < 0.7
        jobs = store.claim(2, LEASE, started=started)
        if not started and jobs:
            store.start([(job.id, job.lease_token or "") for job in jobs])
        for job in jobs:
            if rng.random() < 0.1:
                continue  # abandoned: its lease lapses when a meddler moves the clock
            _finish(store, clock, job, rng, tally)


def _meddle(
    store: JobStore, clock: FakeClock, ids: list[str], seed: int, tally: Tally, purging: bool
) -> None:
    rng = random.Random(seed)
    start = clock.now()
    for _ in range(STEPS):
        job_id = rng.choice(ids)
        step = rng.random()
        if step < 0.35:
            try:
                store.cancel(job_id)
            except (InvalidTransition, JobNotFound):
                pass
            else:
                tally.add("cancelled")
        elif step < 0.75:
            batch = [job_id, *rng.sample(ids, 3)] if rng.random() < 0.5 else [job_id]
            tenant = rng.choice([None, *TENANTS])
            tally.add("moved", len(store.redrive(batch, tenant)))
        elif step < 0.82:
            tally.add("discarded", len(store.discard([job_id])))
        elif step < 0.92 or not purging:
            clock.advance(LEASE + 1)
        else:
            tally.add("purged", store.purge(start + timedelta(seconds=5 * LEASE), 3))


def _recount(store: JobStore, ids: list[str]) -> tuple[Counter[tuple[str, str, JobState]], int]:
    rows: Counter[tuple[str, str, JobState]] = Counter()
    missing = 0
    for job_id in ids:
        job = store.get(job_id)
        if job is None:
            missing += 1
        else:
            rows[(job.tenant, job.queue, job.state)] += 1
    return rows, missing


def _nonzero(counts: dict[tuple[str, JobState], int]) -> dict[tuple[str, JobState], int]:
    return {key: value for key, value in counts.items() if value}


def _by_queue(
    rows: Counter[tuple[str, str, JobState]], tenant: str | None = None
) -> dict[tuple[str, JobState], int]:
    out: Counter[tuple[str, JobState]] = Counter()
    for (owner, queue, state), count in rows.items():
        if tenant is None or owner == tenant:
            out[(queue, state)] += count
    return dict(out)


def _gauges(store: JobStore) -> dict[tuple[str, JobState], int]:
    """The `spool_jobs` samples of a /metrics scrape, nonzero ones."""
    text = Metrics(store, Settings()).exposition().decode()
    found: dict[tuple[str, JobState], int] = {}
    for line in text.splitlines():
        if not line.startswith("spool_jobs{"):
            continue
        labels, value = line.rsplit(" ", 1)
        queue = labels.split('queue="', 1)[1].split('"', 1)[0]
        state = labels.split('state="', 1)[1].split('"', 1)[0]
        if float(value):
            found[(queue, JobState(state))] = int(float(value))
    return found


@pytest.mark.parametrize("purging", [False, True], ids=["no-purge", "purge"])
def test_racing_lifecycle_calls_leave_counts_equal_to_the_rows(
    store: JobStore, clock: FakeClock, purging: bool
) -> None:
    rng = random.Random(62)
    added = store.add(
        [
            new_job(clock, max_attempts=2, tenant=rng.choice(TENANTS), queue=rng.choice(QUEUES))
            for _ in range(JOBS)
        ]
    )
    ids = [result.job.id for result in added]
    tally = Tally()
    seeds = iter(range(WORKERS + MEDDLERS))

    def racer() -> None:
        seed = next(seeds)
        if seed < WORKERS:
            _work(store, clock, seed, tally)
        else:
            _meddle(store, clock, ids, seed, tally, purging)

    assert run_together(racer, WORKERS + MEDDLERS) == []

    rows, missing = _recount(store, ids)
    everyone = _by_queue(rows)
    assert _nonzero(store.counts()) == everyone
    assert _nonzero(store.state_counts()) == everyone
    assert _nonzero(store.queue_totals(list(QUEUES), 0).counts) == everyone
    assert _gauges(store) == everyone
    for tenant in TENANTS:
        theirs = _by_queue(rows, tenant)
        assert _nonzero(store.state_counts(tenant)) == theirs
        waiting = sum(count for (_, state), count in theirs.items() if state in WAITING)
        assert store.waiting_count(tenant) == waiting

    told = tally.told
    events: Counter[str] = Counter()
    for key, count in store.counters().items():
        events[key.event] += count
    assert events["enqueued"] == JOBS
    assert events["succeeded"] == told["succeeded"]
    assert events["cancelled"] == told["cancelled"]
    assert events["failed"] == events["retried"] + events["dead"]
    # Nothing vanished but what a discard or a purge said it deleted.
    assert missing == told["discarded"] + told["purged"]
    if not purging:  # (a purge may delete dead jobs, which no reply counts)
        dead_now = sum(count for (_, _, state), count in rows.items() if state is JobState.DEAD)
        assert told["moved"] == events["dead"] - dead_now - told["discarded"]

"""A stateful test: random sequences of store operations, checked against a model.

The model is a few dictionaries that follow the rules in chalicelib/storage/base.py.
After every step each job's state, attempts and lease, the counts by (queue, state),
the counters, next_due_at and the cache epoch must agree, and so must the attempt
history (number and outcome of each recorded attempt) of the jobs the step touched.
The rules leave no choice: a claim takes jobs by priority, run_at, created_at and
then id (batches may share a created_at, so ties are common), a list pages in
(created_at, id) order, redrive and discard answer in the order asked, each job
once, and a claim by ids takes a job named twice once.

Parameterized over tests.backends.BACKENDS, so a new backend joins unchanged.
"""

from __future__ import annotations

import contextlib
import secrets
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from chalicelib.clock import FakeClock
from chalicelib.errors import InvalidTransition, JobNotFound
from chalicelib.models import Attempt, Completion, CounterKey, JobQuery, JobState, NewJob
from chalicelib.storage.base import JobStore
from chalicelib.storage.queue_totals import fold
from tests.backends import BACKENDS, open_backend
from tests.factories import new_job

TYPE = "model"
HISTORY = 25  # SPOOL_ATTEMPT_HISTORY's default
WAITING = (JobState.QUEUED, JobState.RETRYING)
ACTIVE = (*WAITING, JobState.RUNNING)
TERMINAL = (JobState.SUCCEEDED, JobState.DEAD, JobState.CANCELLED)
TENANTS = ("t1", "t2")

job_specs = st.fixed_dictionaries(
    {
        "tenant": st.sampled_from(TENANTS),
        "key": st.sampled_from([None, None, "k1", "k2", "k3"]),
        "priority": st.sampled_from([0, 0, 1, 5]),
        "delay": st.sampled_from([0, 0, 5, 30]),
        "max_attempts": st.integers(min_value=1, max_value=3),
        "queue": st.sampled_from(["a", "b"]),
    }
)
picks = st.integers(min_value=0, max_value=10_000)


@dataclass
class ModelJob:
    id: str
    tenant: str
    queue: str
    priority: int
    max_attempts: int
    run_at: datetime
    created_at: datetime
    key: str | None
    state: JobState = JobState.QUEUED
    attempts: int = 0
    token: str | None = None
    lease_expires_at: datetime | None = None
    finished_at: datetime | None = None
    old_tokens: list[str] = field(default_factory=list)
    history: list[tuple[int, str]] = field(default_factory=list)  # (number, outcome)

    def order(self) -> tuple[int, datetime, datetime, str]:
        return (-self.priority, self.run_at, self.created_at, self.id)


class StoreMachine(RuleBasedStateMachine):
    backend: str
    request: Any
    tmp_factory: pytest.TempPathFactory

    def __init__(self) -> None:
        super().__init__()
        self.clock = FakeClock()
        self._opened: contextlib.AbstractContextManager[JobStore] = open_backend(
            self.backend, self.clock, self.tmp_factory.mktemp("model"), self.request
        )
        self.store = self._opened.__enter__()
        self.jobs: dict[str, ModelJob] = {}
        self.ids: list[str] = []  # every id ever stored, purged ones included
        self.touched: set[str] = set()  # ids the current step used
        self.idem: dict[tuple[str, str], str] = {}
        self.counters: dict[str, int] = {}
        self.epochs = {tenant: self.store.cache_epoch(tenant) for tenant in TENANTS}
        # Ids in the order made: a claim breaks ties at the id, and random ids made in
        # one millisecond ordered those ties differently each time a choice sequence was
        # replayed, so a precondition could open or shut on replay (FlakyStrategyDefinition).
        # The salt keeps two examples' ids apart in a store that is not emptied between them.
        self.made = 0
        self.salt = secrets.token_hex(10)

    def teardown(self) -> None:
        self._opened.__exit__(None, None, None)

    # -- model helpers -----------------------------------------------------
    def bump(self, *events: str) -> None:
        for event in events:
            self.counters[event] = self.counters.get(event, 0) + 1

    def next_id(self) -> str:
        self.made += 1
        return f"j_{self.made:012x}{self.salt}"

    def pick(self, index: int) -> str:
        job_id = self.ids[index % len(self.ids)]
        self.touched.add(job_id)
        return job_id

    def in_state(self, *states: JobState) -> list[str]:
        return [j.id for j in self.jobs.values() if j.state in states]

    def reap(self) -> None:
        now = self.clock.now()
        for job in self.jobs.values():
            if job.state is JobState.RUNNING and job.lease_expires_at <= now:  # type: ignore[operator]
                dead = job.attempts >= job.max_attempts
                job.history.append((job.attempts, "lease_expired"))
                self.touched.add(job.id)
                job.state = JobState.DEAD if dead else JobState.RETRYING
                if dead:
                    job.finished_at = now
                else:
                    job.run_at = now
                self.release(job)
                self.bump("failed", "dead" if dead else "retried")

    def release(self, job: ModelJob) -> None:
        if job.token is not None:
            job.old_tokens.append(job.token)
        job.token = None
        job.lease_expires_at = None

    def check_claim(self, claimed: list[Any], due: list[ModelJob], limit: int, lease: int) -> None:
        """The most urgent `limit` due jobs, most urgent first: ties end at the id."""
        expected = sorted(due, key=ModelJob.order)[:limit]
        assert [j.id for j in claimed] == [j.id for j in expected], "claim order"
        now = self.clock.now()
        for got in claimed:
            self.touched.add(got.id)
            job = self.jobs[got.id]
            job.state = JobState.RUNNING
            job.attempts += 1
            job.token = got.lease_token
            job.lease_expires_at = now + timedelta(seconds=lease)
            assert got.attempts == job.attempts
            assert got.lease_expires_at == job.lease_expires_at

    # -- rules -------------------------------------------------------------
    @rule(
        specs=st.lists(job_specs, min_size=1, max_size=4), tie=st.booleans(), falling=st.booleans()
    )
    def add(self, specs: list[dict[str, Any]], tie: bool, falling: bool) -> None:
        news = [
            new_job(
                self.clock,
                TYPE,
                delay=s["delay"],
                tenant=s["tenant"],
                idempotency_key=s["key"],
                priority=s["priority"],
                max_attempts=s["max_attempts"],
                queue=s["queue"],
            )
            for s in specs
        ]
        news = [NewJob(**{**n.__dict__, "id": self.next_id()}) for n in news]
        if falling:  # ids against the order added: a store that breaks ties by insertion shows
            ids = sorted((n.id for n in news), reverse=True)
            news = [NewJob(**{**n.__dict__, "id": i}) for n, i in zip(news, ids, strict=True)]
        results = self.store.add(news)
        assert len(results) == len(news)
        now = self.clock.now()
        for new, result in zip(news, results, strict=True):
            key = (new.tenant, new.idempotency_key) if new.idempotency_key else None
            if key is not None and key in self.idem:
                assert not result.created
                assert result.job.id == self.idem[key]
                continue
            assert result.created
            assert result.job.id == new.id
            self.jobs[new.id] = ModelJob(
                id=new.id,
                tenant=new.tenant,
                queue=new.queue,
                priority=new.priority,
                max_attempts=new.max_attempts,
                run_at=new.run_at,
                created_at=now,
                key=new.idempotency_key,
            )
            self.ids.append(new.id)
            self.touched.add(new.id)
            self.bump("enqueued")
            if key is not None:
                self.idem[key] = new.id
        if not tie:  # else the next batch shares this one's created_at
            self.clock.advance(0.001)

    # Only while a job waits or runs (a lease to reap): most claims of an empty store
    # were steps spent on nothing, and claims with ties to break came seldom.
    @precondition(lambda self: any(j.state in ACTIVE for j in self.jobs.values()))
    @rule(
        limit=st.integers(min_value=1, max_value=5),
        lease=st.sampled_from([5, 30]),
        queue=st.sampled_from([None, "a", "b"]),
    )
    def claim(self, limit: int, lease: int, queue: str | None) -> None:
        self.reap()
        now = self.clock.now()
        due = [
            j
            for j in self.jobs.values()
            if j.state in WAITING and j.run_at <= now and (queue is None or j.queue == queue)
        ]
        claimed = self.store.claim(limit, lease, [queue] if queue else None)
        self.check_claim(claimed, due, limit, lease)
        self.check_oldest_due()

    @precondition(lambda self: self.ids)
    @rule(chosen=st.lists(picks, min_size=1, max_size=3), limit=st.integers(1, 3))
    def claim_ids(self, chosen: list[int], limit: int) -> None:
        self.reap()
        wanted = [self.pick(i) for i in chosen]  # a job named twice is claimed once
        now = self.clock.now()
        due = [
            self.jobs[i]
            for i in dict.fromkeys(wanted)
            if i in self.jobs and self.jobs[i].state in WAITING and self.jobs[i].run_at <= now
        ]
        claimed = self.store.claim(limit, 30, ids=wanted)
        self.check_claim(claimed, due, limit, 30)

    @precondition(lambda self: self.ids)
    @rule(
        index=picks,
        outcome=st.sampled_from([JobState.SUCCEEDED, JobState.RETRYING, JobState.DEAD]),
        stale=st.booleans(),
        retry_in=st.sampled_from([0, 1, 10]),
    )
    def finish(self, index: int, outcome: JobState, stale: bool, retry_in: int) -> None:
        job_id = self.pick(index)
        job = self.jobs.get(job_id)
        if job is None:
            token = "purged"
        elif stale or job.token is None:
            token = job.old_tokens[-1] if job.old_tokens else "never-issued"
        else:
            token = job.token
        now = self.clock.now()
        retry_at = now + timedelta(seconds=retry_in) if outcome is JobState.RETRYING else None
        attempt = Attempt(
            number=job.attempts if job is not None else 1,
            started_at=now - timedelta(seconds=1),
            finished_at=now,
            worker="model:1",
            outcome=outcome.value,
            error_type=None if outcome is JobState.SUCCEEDED else "ValueError",
            error=None if outcome is JobState.SUCCEEDED else "e",
            next_delay=float(retry_in) if outcome is JobState.RETRYING else None,
        )
        completion = Completion(
            job_id, token, outcome, result={"n": 1}, error="e", retry_at=retry_at, attempt=attempt
        )
        [applied] = self.store.finish([completion])
        expected = job is not None and job.state is JobState.RUNNING and token == job.token
        assert applied == expected
        if not expected:
            return
        assert job is not None
        job.history.append((attempt.number, outcome.value))
        job.state = outcome
        self.release(job)
        if outcome is JobState.RETRYING:
            assert retry_at is not None
            job.run_at = retry_at
            self.bump("failed", "retried")
        else:
            job.finished_at = now
            self.bump("succeeded" if outcome is JobState.SUCCEEDED else "failed")
            if outcome is JobState.DEAD:
                self.bump("dead")

    @precondition(lambda self: any(j.state is JobState.RUNNING for j in self.jobs.values()))
    @rule(
        index=picks,
        outcome=st.sampled_from([JobState.SUCCEEDED, JobState.RETRYING, JobState.DEAD]),
        retry_in=st.sampled_from([0, 1, 10]),
    )
    def finish_running(self, index: int, outcome: JobState, retry_in: int) -> None:
        """Most finishes come from the worker holding the lease: aim at running jobs."""
        running = self.in_state(JobState.RUNNING)
        self.finish(self.ids.index(running[index % len(running)]), outcome, False, retry_in)

    @precondition(lambda self: any(j.state is JobState.DEAD for j in self.jobs.values()))
    @rule(index=picks)
    def redrive_dead(self, index: int) -> None:
        dead = self.in_state(JobState.DEAD)
        self.redrive([self.ids.index(dead[index % len(dead)])])

    @precondition(lambda self: self.ids)
    @rule(index=picks, stale=st.booleans(), lease=st.sampled_from([5, 30]))
    def extend(self, index: int, stale: bool, lease: int) -> None:
        job = self.jobs.get(self.pick(index))
        if job is None:
            return
        token = (job.old_tokens[-1] if job.old_tokens else "x") if stale else (job.token or "x")
        now = self.clock.now()
        ok = self.store.extend_lease(job.id, token, lease)
        expected = (
            job.state is JobState.RUNNING
            and token == job.token
            and job.lease_expires_at is not None
            and job.lease_expires_at > now
        )
        assert ok == expected
        if ok:
            job.lease_expires_at = now + timedelta(seconds=lease)

    @rule(seconds=st.sampled_from([0.5, 3, 10, 31, 100]))
    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)
        self.check_oldest_due()

    def check_oldest_due(self) -> None:
        """Per queue, the earliest run_at of the waiting jobs already due (one tenant's too)."""
        now = self.clock.now()
        for tenant in (None, TENANTS[0]):
            expected: dict[str, datetime] = {}
            for j in self.jobs.values():
                if j.state in WAITING and j.run_at <= now and tenant in (None, j.tenant):
                    expected[j.queue] = min(j.run_at, expected.get(j.queue, j.run_at))
            assert self.store.oldest_due(tenant=tenant) == expected, tenant

    @precondition(lambda self: self.ids)
    @rule(index=picks, wrong_tenant=st.booleans())
    def cancel(self, index: int, wrong_tenant: bool) -> None:
        job_id = self.pick(index)
        job = self.jobs.get(job_id)
        tenant = None if job is None else ("nobody" if wrong_tenant else job.tenant)
        if job is None or wrong_tenant:
            with pytest.raises(JobNotFound) as missing:
                self.store.cancel(job_id, tenant)
            assert (missing.value.message, missing.value.details) == (
                "job not found",
                {"id": job_id},
            )
            return
        if job.state not in WAITING:
            with pytest.raises(InvalidTransition) as refused:
                self.store.cancel(job_id, tenant)
            state = job.state.value
            assert (refused.value.message, refused.value.details) == (
                f"a {state} job cannot be cancelled",
                {"state": state},
            )
            return
        cancelled = self.store.cancel(job_id, tenant)
        assert cancelled.state is JobState.CANCELLED
        job.state = JobState.CANCELLED
        job.finished_at = self.clock.now()
        self.bump("cancelled")

    def dead_among(self, wanted: list[str], tenant: str | None) -> list[str]:
        """The dead jobs (the tenant's, when given) among `wanted`, in order, each once."""
        return [
            i
            for i in dict.fromkeys(wanted)
            if i in self.jobs
            and self.jobs[i].state is JobState.DEAD
            and (tenant is None or self.jobs[i].tenant == tenant)
        ]

    @precondition(lambda self: self.ids)
    @rule(
        chosen=st.lists(picks, min_size=1, max_size=4),
        tenant=st.sampled_from([None, None, *TENANTS]),
    )
    def redrive(self, chosen: list[int], tenant: str | None = None) -> None:
        wanted = [self.pick(i) for i in chosen]  # repeats kept: answered once, in order
        moved = self.store.redrive(wanted, tenant)
        expected = self.dead_among(wanted, tenant)
        assert [j.id for j in moved] == expected
        self.epochs_moved({self.jobs[i].tenant for i in expected})
        now = self.clock.now()
        for job_id in expected:
            job = self.jobs[job_id]
            job.state = JobState.QUEUED
            job.attempts = 0
            job.run_at = now
            job.finished_at = None

    @precondition(lambda self: any(j.state is JobState.DEAD for j in self.jobs.values()))
    @rule(
        index=picks,
        chosen=st.lists(picks, max_size=2),
        tenant=st.sampled_from([None, None, *TENANTS]),
    )
    def discard(self, index: int, chosen: list[int], tenant: str | None) -> None:
        dead = self.in_state(JobState.DEAD)
        wanted = [dead[index % len(dead)], *(self.pick(i) for i in chosen)]
        self.touched.update(wanted)
        expected = self.dead_among(wanted, tenant)
        assert self.store.discard(wanted, tenant) == expected
        self.epochs_moved({self.jobs[i].tenant for i in expected})
        for job_id in expected:
            job = self.jobs.pop(job_id)
            if job.key is not None:
                self.idem.pop((job.tenant, job.key), None)

    @rule(
        tenant=st.sampled_from([None, *TENANTS]),
        state=st.sampled_from([None, None, *JobState]),
        limit=st.sampled_from([2, 3, 1000]),
        newest_first=st.booleans(),
    )
    def list_pages(
        self, tenant: str | None, state: JobState | None, limit: int, newest_first: bool
    ) -> None:
        """Every page of a listing, in (created_at, id) order: ties included."""
        expected = sorted(
            (
                j
                for j in self.jobs.values()
                if (tenant is None or j.tenant == tenant) and (state is None or j.state is state)
            ),
            key=lambda j: (j.created_at, j.id),
            reverse=newest_first,
        )
        seen: list[str] = []
        cursor: str | None = None
        while True:
            query = JobQuery(
                tenant=tenant, state=state, limit=limit, cursor=cursor, newest_first=newest_first
            )
            page = self.store.list_jobs(query)
            assert len(page.jobs) <= limit
            seen.extend(j.id for j in page.jobs)
            if page.next_cursor is None:
                break
            cursor = page.next_cursor
        assert seen == [j.id for j in expected]

    @rule(age=st.sampled_from([0, 10, 100]))
    def purge(self, age: int) -> None:
        cutoff = self.clock.now() - timedelta(seconds=age)
        doomed = [
            j
            for j in self.jobs.values()
            if j.state in TERMINAL and j.finished_at is not None and j.finished_at < cutoff
        ]
        assert self.store.purge(cutoff, limit=10_000) == len(doomed)
        self.epochs_moved({job.tenant for job in doomed})
        for job in doomed:
            del self.jobs[job.id]
            if job.key is not None:
                self.idem.pop((job.tenant, job.key), None)

    def epochs_moved(self, changed: set[str]) -> None:
        """A redrive or purge grows the epoch of each tenant whose jobs it changed and
        keeps every other tenant's (all of them, when it changed nothing)."""
        for tenant in TENANTS:
            epoch = self.store.cache_epoch(tenant)
            before = self.epochs[tenant]
            assert (epoch > before) if tenant in changed else (epoch == before), tenant
            self.epochs[tenant] = epoch

    # -- what must always agree ------------------------------------------------
    @invariant()
    def epoch_agrees(self) -> None:
        # No other operation moves them, so caches keep their entries through them.
        assert {t: self.store.cache_epoch(t) for t in TENANTS} == self.epochs

    @invariant()
    def jobs_agree(self) -> None:
        # One listing compares every job (cheap on every backend); `get` checks the
        # jobs this step touched, purged ones included.
        listed: dict[str, Any] = {}
        cursor: str | None = None
        while True:
            page = self.store.list_jobs(JobQuery(limit=1000, cursor=cursor))
            listed.update((j.id, j) for j in page.jobs)
            if page.next_cursor is None:
                break
            cursor = page.next_cursor
        assert set(listed) == set(self.jobs), "listed jobs differ from the model's"
        for job_id, job in self.jobs.items():
            got = listed[job_id]
            assert (got.state, got.attempts) == (job.state, job.attempts), job_id
            assert got.lease_token == job.token
            assert got.lease_expires_at == job.lease_expires_at
            if job.state in WAITING:
                assert got.run_at == job.run_at
            assert got.finished_at == job.finished_at
        for job_id in self.touched:
            fetched = self.store.get(job_id)
            recorded = self.store.attempts(job_id)
            if job_id in self.jobs:
                assert fetched == listed[job_id], f"get and list disagree on {job_id}"
                assert recorded is not None
                assert [(a.number, a.outcome) for a in recorded] == self.jobs[job_id].history[
                    -HISTORY:
                ], f"attempt history of {job_id}"
            else:
                assert fetched is None, f"{job_id} should have been purged"
                assert recorded is None, f"{job_id}'s history should have gone with it"
        self.touched.clear()

    @invariant()
    def counts_agree(self) -> None:
        expected: dict[tuple[str, JobState], int] = {}
        for job in self.jobs.values():
            expected[(job.queue, job.state)] = expected.get((job.queue, job.state), 0) + 1
        assert self.store.counts() == expected
        # A scrape's totals (kept by the store as jobs move, in memory) are the fold.
        # The counters read once: nothing moves them between the four folds (on moto
        # each read is a query; four a step were 7 s of the DynamoDB model test's 77).
        counters = self.store.counters()
        for keep, busiest in (([], 0), (["a"], 0), ([], 1), (["b", "_other"], 2)):
            assert self.store.queue_totals(keep, busiest) == fold(counters, expected, keep, busiest)
        # The dashboard's kept counts (JobStore.state_counts) equal counting, per tenant too.
        assert self.store.state_counts() == expected
        for tenant in TENANTS:
            mine: dict[tuple[str, JobState], int] = {}
            for job in self.jobs.values():
                if job.tenant == tenant:
                    mine[(job.queue, job.state)] = mine.get((job.queue, job.state), 0) + 1
            assert self.store.state_counts(tenant) == mine

    @invariant()
    def counters_agree(self) -> None:
        got: dict[str, int] = {}
        for key, n in self.store.counters().items():
            assert isinstance(key, CounterKey) and key.type == TYPE
            if n:
                got[key.event] = got.get(key.event, 0) + n
        assert got == {e: n for e, n in self.counters.items() if n}

    @invariant()
    def next_due_agrees(self) -> None:
        times = [j.run_at for j in self.jobs.values() if j.state in WAITING] + [
            j.lease_expires_at
            for j in self.jobs.values()
            if j.state is JobState.RUNNING and j.lease_expires_at is not None
        ]
        assert self.store.next_due_at() == (min(times) if times else None)


# One at a time on parallel workers: see "heavy" in docs/testing.md. The timeout is
# the suite's 300 s three times over: on moto every step's invariants are a dozen
# requests, and beside a loaded machine's other work the DynamoDB search ran past
# 300 s (216 s alone, 378 s beside a full run and two other suites, stop 48).
@pytest.mark.timeout(900)
@pytest.mark.xdist_group("heavy")
@pytest.mark.parametrize("backend", BACKENDS)
def test_store_agrees_with_the_model(
    backend: str, request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> None:
    machine = type(
        f"StoreMachine_{backend}",
        (StoreMachine,),
        {"backend": backend, "request": request, "tmp_factory": tmp_path_factory},
    )
    run_state_machine_as_test(
        machine,
        settings=settings(
            max_examples=25,
            stateful_step_count=30,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
        ),
    )

"""Where the stores could each give a different answer to the same calls, one answer.

Every backend was driven with the same operations on the same test clock and its
answers compared with the memory store's: these pin what differed (ties broken by
id, answers in the order asked, a claim that takes nothing still reaps, durations
exact to the microsecond, empty lists meaning none) and what a store-specific test
checked for one backend only (an add's answer is what get reads back, a tenant's
list pages across states and ties, an idempotency key's life, concurrent claims).
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from chalicelib.clock import FakeClock
from chalicelib.limits import ClaimPolicy, Limit
from chalicelib.models import Completion, JobQuery, JobState, NewJob
from chalicelib.storage.base import JobStore
from tests.factories import new_job, stored, token
from tests.threads import run_together

LEASE = 30.0


def named(clock: FakeClock, number: int, **fields) -> NewJob:
    """A job whose id sorts by `number` (ids are otherwise random within a millisecond)."""
    job = new_job(clock, **fields)
    return NewJob(**{**job.__dict__, "id": f"j_{number:032x}"})


def bury(store: JobStore, job_ids: list[str]) -> None:
    claimed = store.claim(len(job_ids), LEASE, ids=job_ids)
    done = [Completion(j.id, token(j), JobState.DEAD, error="x") for j in claimed]
    assert store.finish(done) == [True] * len(job_ids)


# -- ties: priority, run_at and created_at equal --------------------------------


def _add_tied(store: JobStore, clock: FakeClock, numbers: list[int], **fields) -> None:
    """One at a time, in the order given, on a clock that does not move: every job
    shares its priority, run_at and created_at, and only the id tells them apart."""
    run_at = clock.now()
    for number in numbers:
        store.add([named(clock, number, run_at=run_at, **fields)])


@pytest.mark.parametrize(
    "policy",
    [None, ClaimPolicy((Limit("type", "echo", concurrency=100),)), ClaimPolicy(fair=True)],
    ids=["plain", "limited", "fair"],
)
def test_exact_ties_are_claimed_lowest_id_first(
    store: JobStore, clock: FakeClock, policy: ClaimPolicy | None
) -> None:
    _add_tied(store, clock, [5, 2, 4, 1, 3])
    first = store.claim(2, LEASE, policy=policy)
    assert [j.id for j in first] == [f"j_{n:032x}" for n in (1, 2)]
    rest = store.claim(10, LEASE, policy=policy)
    assert [j.id for j in rest] == [f"j_{n:032x}" for n in (3, 4, 5)]


def test_exact_ties_named_by_id_are_claimed_lowest_id_first(
    store: JobStore, clock: FakeClock
) -> None:
    _add_tied(store, clock, [3, 1, 2], priority=2)
    ids = [f"j_{n:032x}" for n in (3, 1, 2)]
    assert [j.id for j in store.claim(2, LEASE, ids=ids)] == sorted(ids)[:2]


def test_ties_within_a_priority_fall_back_to_created_at_then_id(
    store: JobStore, clock: FakeClock
) -> None:
    run_at = clock.now()
    store.add([named(clock, 9, run_at=run_at)])  # created first, largest id
    clock.advance(1)
    store.add([named(clock, 7, run_at=run_at), named(clock, 8, run_at=run_at, priority=1)])
    claimed = store.claim(3, LEASE)
    assert [j.id for j in claimed] == [f"j_{n:032x}" for n in (8, 9, 7)]


# -- answers in the order asked, each job once ---------------------------------


def test_a_job_named_twice_in_one_claim_is_claimed_once(store: JobStore, clock: FakeClock) -> None:
    a, b = (store.add([new_job(clock)])[0].job for _ in range(2))
    claimed = store.claim(10, LEASE, ids=[a.id, b.id, a.id, a.id])
    assert sorted(j.id for j in claimed) == sorted([a.id, b.id])
    assert stored(store, a.id).attempts == 1
    assert stored(store, a.id).lease_token == {j.id: j for j in claimed}[a.id].lease_token


def test_redrive_answers_in_the_order_asked_and_each_job_once(
    store: JobStore, clock: FakeClock
) -> None:
    jobs = [store.add([named(clock, n)])[0].job.id for n in (1, 2, 3)]
    bury(store, jobs)
    asked = [jobs[2], jobs[0], jobs[2], jobs[1]]
    assert [j.id for j in store.redrive(asked)] == [jobs[2], jobs[0], jobs[1]]


def test_discard_answers_in_the_order_asked_and_each_job_once(
    store: JobStore, clock: FakeClock
) -> None:
    jobs = [store.add([named(clock, n)])[0].job.id for n in (1, 2, 3)]
    bury(store, jobs)
    asked = [jobs[2], jobs[0], jobs[2], jobs[1]]
    assert store.discard(asked) == [jobs[2], jobs[0], jobs[1]]


# -- a claim that takes nothing ------------------------------------------------


@pytest.mark.parametrize(
    "how",
    [
        {"limit": 0},
        {"queues": []},
        {"ids": []},
        {"queues": ["no-such-queue"]},
        {"ids": ["j_" + "0" * 32]},
    ],
    ids=["limit-0", "no-queues", "no-ids", "other-queue", "other-id"],
)
def test_a_claim_that_takes_nothing_still_reaps_expired_leases(
    store: JobStore, clock: FakeClock, how: dict[str, Any]
) -> None:
    """A running job whose lease expired is reaped by the next claim, whatever that
    claim then takes (base.py: "first *reaped*")."""
    dead = store.add([new_job(clock, max_attempts=1)])[0].job
    retried = store.add([new_job(clock, max_attempts=2)])[0].job
    store.claim(2, LEASE)
    clock.advance(LEASE + 1)
    assert store.claim(how.get("limit", 5), LEASE, how.get("queues"), how.get("ids")) == []
    assert stored(store, dead.id).state is JobState.DEAD
    assert stored(store, retried.id).state is JobState.RETRYING


def test_no_queues_have_no_next_due_time(store: JobStore, clock: FakeClock) -> None:
    store.add([new_job(clock, queue="a")])
    store.claim(1, LEASE)
    store.add([new_job(clock, queue="b", delay=10)])
    assert store.next_due_at([]) is None
    assert store.next_due_at(["zz"]) is None
    assert store.next_due_at(["b"]) == clock.now() + timedelta(seconds=10)
    assert store.next_due_at() == clock.now() + timedelta(seconds=10)
    assert store.oldest_due([]) == {}


# -- durations in seconds, to the microsecond ----------------------------------

# Seconds whose float times 1e6 falls just below the whole microseconds they are
# (2.01 * 1e6 == 2009999.9999999998): truncated, each came out a microsecond short.
SHORT_BY_TRUNCATION = (2.01, 4.1, 0.000001)


@pytest.mark.parametrize("seconds", SHORT_BY_TRUNCATION)
def test_a_lease_lasts_exactly_the_seconds_asked(
    store: JobStore, clock: FakeClock, seconds: float
) -> None:
    length = timedelta(seconds=seconds)
    job = store.add([new_job(clock)])[0].job
    [claimed] = store.claim(1, seconds)
    assert claimed.lease_expires_at == clock.now() + length
    assert store.next_due_at() == clock.now() + length
    clock.advance(0.5 if seconds > 1 else 0)
    assert store.extend_lease(job.id, token(claimed), seconds)
    assert stored(store, job.id).lease_expires_at == clock.now() + length


@pytest.mark.parametrize("seconds", SHORT_BY_TRUNCATION[:2])
def test_a_worker_is_live_for_exactly_the_seconds_asked(
    store: JobStore, clock: FakeClock, seconds: float
) -> None:
    store.beat("w", None, clock.now())
    clock.advance(seconds)
    assert [b.worker for b in store.live_workers(seconds)] == ["w"]
    clock.advance(0.000001)
    assert store.live_workers(seconds) == []


@pytest.mark.parametrize("seconds", SHORT_BY_TRUNCATION[:2])
def test_a_webhook_lease_lasts_exactly_the_seconds_asked(
    store: JobStore, clock: FakeClock, seconds: float
) -> None:
    job = store.add([new_job(clock, callback_url="http://127.0.0.1:9/hook")])[0].job
    store.cancel(job.id)
    [delivery] = store.claim_webhooks(1, seconds)
    assert delivery.lease_expires_at == clock.now() + timedelta(seconds=seconds)


# -- the add's answer ----------------------------------------------------------


@pytest.mark.parametrize("clock_zone", [UTC, timezone(timedelta(hours=-5))])
@pytest.mark.parametrize("kind", ["single", "keyed", "batch"])
def test_an_add_answers_the_job_get_reads_back(
    store: JobStore, clock: FakeClock, clock_zone: timezone, kind: str
) -> None:
    """Whatever zone the clock and run_at are given in, the add's answer is the job
    get reads back, field for field, at the instants given (SQLite's single add,
    Postgres's keyless batch and Redis build their answers from what was sent, not
    from a read)."""
    clock.set(datetime(2030, 1, 1, 0, 0, 1, 654321, tzinfo=UTC).astimezone(clock_zone))
    run_at = datetime(2030, 1, 1, 2, 0, 5, 123456, tzinfo=timezone(timedelta(hours=2)))
    batch = [new_job(clock, run_at=run_at, payload={"k": "h\xe9llo \U0001f600", "n": [1.5]})]
    if kind == "keyed":
        batch = [new_job(clock, run_at=run_at, idempotency_key="k\x00\U0001f600")]
    elif kind == "batch":
        batch.append(new_job(clock, run_at=run_at, queue="other", priority=-3, max_attempts=9))
    added = store.add(batch)
    for result in added:
        assert result.created
        got = stored(store, result.job.id)
        assert result.job.model_dump() == got.model_dump()
        assert got.run_at == run_at and got.created_at == got.updated_at == clock.now()


# -- a tenant's list across states and ties ------------------------------------


@pytest.mark.parametrize("newest_first", [False, True])
@pytest.mark.parametrize("limit", [1, 3, 7])
def test_a_tenant_list_of_every_state_pages_through_ties_in_order(
    store: JobStore, clock: FakeClock, newest_first: bool, limit: int
) -> None:
    """Jobs of every state, several sharing each created_at (the id breaks the tie
    across states): the pages are exactly the jobs in (created_at, id) order."""
    for round_ in range(3):
        batch = [new_job(clock, tenant=t) for t in ("a", "a", "a", "b") for _ in (0, 1)]
        store.add(batch)
        claimed = store.claim(4, LEASE, ids=[j.id for j in batch[:5]])  # the fourth runs on
        states = (JobState.SUCCEEDED, JobState.DEAD, JobState.SUCCEEDED)
        store.finish([Completion(j.id, token(j), s) for j, s in zip(claimed, states, strict=False)])
        if round_ % 2:
            clock.advance(1)
    every = store.list_jobs(JobQuery(tenant="a", limit=1000)).jobs
    assert {j.state for j in every} >= {
        JobState.QUEUED,
        JobState.RUNNING,
        JobState.SUCCEEDED,
        JobState.DEAD,
    }
    expected = sorted(every, key=lambda j: (j.created_at, j.id), reverse=newest_first)
    seen: list[str] = []
    cursor = None
    while True:
        page = store.list_jobs(
            JobQuery(tenant="a", limit=limit, cursor=cursor, newest_first=newest_first)
        )
        assert len(page.jobs) <= limit
        seen.extend(job.id for job in page.jobs)
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert seen == [j.id for j in expected]


def test_pages_after_a_change_continue_where_they_stopped(
    store: JobStore, clock: FakeClock
) -> None:
    """A job added with the same created_at as the last row listed lands by its id;
    one that changed state between pages is listed where its (created_at, id) puts it,
    once; the cursor never repeats or skips a job that stayed."""
    store.add([named(clock, n, tenant="t") for n in (10, 20, 30, 40)])
    first = store.list_jobs(JobQuery(tenant="t", limit=2))
    assert [j.id for j in first.jobs] == [f"j_{n:032x}" for n in (10, 20)]
    store.add([named(clock, 15, tenant="t"), named(clock, 25, tenant="t")])
    store.claim(10, LEASE, ids=[f"j_{30:032x}"])
    rest = store.list_jobs(JobQuery(tenant="t", limit=10, cursor=first.next_cursor))
    assert [j.id for j in rest.jobs] == [f"j_{n:032x}" for n in (25, 30, 40)]
    queued = store.list_jobs(
        JobQuery(tenant="t", state=JobState.QUEUED, limit=10, cursor=first.next_cursor)
    )
    assert [j.id for j in queued.jobs] == [f"j_{n:032x}" for n in (25, 40)]


# -- an idempotency key's life -------------------------------------------------


def test_a_key_stays_with_its_job_until_the_job_is_deleted(
    store: JobStore, clock: FakeClock
) -> None:
    """Held while the job waits, runs, retries, dies and is redriven; free again once
    the job is discarded or purged (a key names a stored job, not a used word)."""
    first = store.add([new_job(clock, tenant="t", idempotency_key="k", max_attempts=2)])[0].job

    def again() -> tuple[str, bool]:
        result = store.add([new_job(clock, tenant="t", idempotency_key="k")])[0]
        return result.job.id, result.created

    [claimed] = store.claim(1, LEASE)
    assert again() == (first.id, False)
    retry = Completion(first.id, token(claimed), JobState.RETRYING, retry_at=clock.now())
    store.finish([retry])
    assert again() == (first.id, False)
    bury(store, [first.id])
    assert again() == (first.id, False)
    assert [j.id for j in store.redrive([first.id])] == [first.id]
    assert again() == (first.id, False)
    bury(store, [first.id])
    assert store.discard([first.id]) == [first.id]
    assert store.get_by_key("t", "k") is None
    second_id, created = again()
    assert created and second_id != first.id
    assert stored(store, second_id).idempotency_key == "k"
    store.cancel(second_id)
    clock.advance(10)
    assert store.purge(clock.now()) == 1
    third_id, created = again()
    assert created and third_id not in (first.id, second_id)
    assert store.get_by_key("t", "k") == stored(store, third_id)


def test_an_empty_idempotency_key_is_a_key(store: JobStore, clock: FakeClock) -> None:
    """None is "no key"; "" is a key like any other (the API refuses it, the store
    does not tell it apart)."""
    a, b = new_job(clock, idempotency_key=""), new_job(clock, idempotency_key="")
    results = store.add([a])
    results += store.add([b])
    assert [(r.job.id, r.created) for r in results] == [(a.id, True), (a.id, False)]
    assert sum(store.counts().values()) == 1
    assert store.get_by_key("default", "") == stored(store, a.id)


# -- claims from many threads ----------------------------------------------------


def test_claims_from_many_threads_hand_each_job_out_once(store: JobStore, clock: FakeClock) -> None:
    store.add([new_job(clock) for _ in range(60)])
    taken: list[str] = []
    lock = threading.Lock()

    def claimer() -> None:
        while True:
            got = store.claim(3, LEASE)
            if not got:
                return
            with lock:
                taken.extend(j.id for j in got)

    assert run_together(claimer, 4) == []
    assert len(taken) == 60 and len(set(taken)) == 60
    assert store.counts() == {("default", JobState.RUNNING): 60}


# -- webhook deliveries that tie -------------------------------------------------


def test_deliveries_that_tie_are_claimed_lowest_id_first(store: JobStore, clock: FakeClock) -> None:
    """Deliveries due at one moment and written at one moment go out in id order on
    every store (the memory store took them in the order written)."""
    jobs = [new_job(clock, callback_url="http://127.0.0.1:9/hook") for _ in range(5)]
    store.add(jobs)
    for job in jobs:
        store.cancel(job.id)
    written = sorted(d.id for job in jobs for d in store.webhooks(job.id))
    assert len(written) == 5
    assert [d.id for d in store.claim_webhooks(2, LEASE)] == written[:2]
    assert [d.id for d in store.claim_webhooks(5, LEASE)] == written[2:]

"""Where the stores could each give a different answer to the same calls, one answer.

Every backend was driven with the same operations on the same test clock and its
answers compared with the memory store's: these pin what differed (ties broken by
id, answers in the order asked, a claim that takes nothing still reaps, durations
exact to the microsecond, empty lists meaning none) and what a store-specific test
checked for one backend only (an add's answer is what get reads back, a tenant's
list pages across states and ties, an idempotency key's life, concurrent claims).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from chalicelib.clock import FakeClock
from chalicelib.limits import ClaimPolicy, Limit
from chalicelib.models import Completion, JobState, NewJob
from chalicelib.storage.base import JobStore
from tests.factories import new_job, stored, token

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

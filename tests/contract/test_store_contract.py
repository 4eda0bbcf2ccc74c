"""The JobStore contract: every backend passes this suite unchanged."""

from __future__ import annotations

import logging
from dataclasses import replace
from datetime import timedelta

import pytest

from chalicelib import worker_id
from chalicelib.clock import FakeClock
from chalicelib.errors import BadRequest, InvalidTransition, JobNotFound
from chalicelib.models import (
    MAX_ERROR_TYPE_CHARS,
    Attempt,
    Completion,
    CounterKey,
    JobQuery,
    JobState,
    WorkerBeat,
)
from chalicelib.storage.base import LEASE_EXPIRED_ERROR, JobStore
from tests.backends import BACKENDS, open_backend
from tests.factories import history, new_job, stored, token

LEASE = 30.0


def add_one(store: JobStore, clock: FakeClock, **fields):
    return store.add([new_job(clock, **fields)])[0].job


def succeed(job, result=None) -> Completion:
    return Completion(job.id, token(job), JobState.SUCCEEDED, result=result)


# -- add and get -------------------------------------------------------------


def test_add_then_get_round_trips_every_field(store: JobStore, clock: FakeClock) -> None:
    new = new_job(
        clock,
        payload={"to": "a@b.c", "n": [1, 2, {"x": None}]},
        queue="mail",
        priority=3,
        max_attempts=7,
        tenant="acme",
        idempotency_key="k1",
    )
    [added] = store.add([new])
    assert added.created
    job = stored(store, new.id)
    assert job is not None
    assert job == added.job
    assert (job.type, job.queue, job.priority, job.max_attempts, job.tenant) == (
        "echo",
        "mail",
        3,
        7,
        "acme",
    )
    assert job.payload == {"to": "a@b.c", "n": [1, 2, {"x": None}]}
    assert job.state is JobState.QUEUED
    assert job.attempts == 0
    assert job.run_at == new.run_at
    assert job.created_at == clock.now()
    assert job.idempotency_key == "k1"
    assert job.lease_token is None and job.result is None and job.last_error is None


def test_get_unknown_or_other_tenant_is_none(store: JobStore, clock: FakeClock) -> None:
    job = add_one(store, clock, tenant="acme")
    assert store.get("j_" + "0" * 32) is None
    assert store.get(job.id, tenant="other") is None
    assert store.get(job.id, tenant="acme") is not None


def test_add_batch_keeps_order(store: JobStore, clock: FakeClock) -> None:
    news = [new_job(clock, payload={"i": i}) for i in range(25)]
    results = store.add(news)
    assert [r.job.id for r in results] == [n.id for n in news]
    assert all(r.created for r in results)
    assert sum(store.counts().values()) == 25


# -- idempotency -------------------------------------------------------------


def test_same_idempotency_key_same_tenant_returns_existing(
    store: JobStore, clock: FakeClock
) -> None:
    first = store.add([new_job(clock, idempotency_key="once", tenant="t1")])[0]
    again = store.add([new_job(clock, idempotency_key="once", tenant="t1", payload={"x": 2})])[0]
    assert first.created and not again.created
    assert again.job.id == first.job.id
    assert again.job.payload == first.job.payload
    assert sum(store.counts().values()) == 1


def test_idempotency_keys_are_per_tenant(store: JobStore, clock: FakeClock) -> None:
    a = store.add([new_job(clock, idempotency_key="k", tenant="t1")])[0]
    b = store.add([new_job(clock, idempotency_key="k", tenant="t2")])[0]
    assert a.created and b.created and a.job.id != b.job.id


def test_duplicate_keys_inside_one_batch_store_one_job(store: JobStore, clock: FakeClock) -> None:
    results = store.add(
        [new_job(clock, idempotency_key="dup"), new_job(clock, idempotency_key="dup")]
    )
    assert [r.created for r in results] == [True, False]
    assert results[0].job.id == results[1].job.id
    assert sum(store.counts().values()) == 1


def test_a_seen_key_returns_the_callback_url_stored_with_its_job(
    store: JobStore, clock: FakeClock
) -> None:
    a, b = "http://127.0.0.1:9/a", "http://127.0.0.1:9/b"
    first = store.add([new_job(clock, idempotency_key="cb", tenant="t1", callback_url=a)])[0]
    again = store.add([new_job(clock, idempotency_key="cb", tenant="t1", callback_url=b)])[0]
    assert first.created and first.callback_url is None
    assert not again.created and again.job.id == first.job.id
    assert again.callback_url == a
    same = store.add([new_job(clock, idempotency_key="cb", tenant="t1", callback_url=a)])[0]
    assert not same.created and same.callback_url == a


def test_a_seen_key_whose_job_has_no_callback_url_returns_none(
    store: JobStore, clock: FakeClock
) -> None:
    first = store.add([new_job(clock, idempotency_key="plain", tenant="t1")])[0]
    again = store.add(
        [new_job(clock, idempotency_key="plain", tenant="t1", callback_url="http://127.0.0.1:9/b")]
    )[0]
    assert first.created and not again.created and again.job.id == first.job.id
    assert again.callback_url is None


def test_a_key_repeated_in_one_batch_returns_the_first_jobs_callback_url(
    store: JobStore, clock: FakeClock
) -> None:
    a, b = "http://127.0.0.1:9/a", "http://127.0.0.1:9/b"
    fresh = store.add(
        [
            new_job(clock, idempotency_key="new", callback_url=a),
            new_job(clock, idempotency_key="new", callback_url=b),
        ]
    )
    assert [(r.created, r.callback_url) for r in fresh] == [(True, None), (False, a)]
    held = store.add(
        [
            new_job(clock, idempotency_key="new", callback_url=b),
            new_job(clock, idempotency_key="new"),
        ]
    )
    assert [(r.created, r.callback_url) for r in held] == [(False, a), (False, a)]
    assert {r.job.id for r in held} == {fresh[0].job.id}
    assert sum(store.counts().values()) == 1


# -- claiming ----------------------------------------------------------------


def test_claim_orders_by_priority_then_run_at(store: JobStore, clock: FakeClock) -> None:
    low_early = add_one(store, clock, priority=0, run_at=clock.now() - timedelta(seconds=30))
    high_late = add_one(store, clock, priority=5, run_at=clock.now() - timedelta(seconds=1))
    high_early = add_one(store, clock, priority=5, run_at=clock.now() - timedelta(seconds=20))
    low_late = add_one(store, clock, priority=0, run_at=clock.now() - timedelta(seconds=2))
    claimed = store.claim(10, LEASE)
    assert [j.id for j in claimed] == [high_early.id, high_late.id, low_early.id, low_late.id]


def test_claim_takes_the_best_jobs_first_under_a_limit(store: JobStore, clock: FakeClock) -> None:
    for _ in range(5):
        add_one(store, clock, priority=0)
    urgent = add_one(store, clock, priority=9)
    first = store.claim(1, LEASE)
    assert [j.id for j in first] == [urgent.id]
    assert len(store.claim(3, LEASE)) == 3
    assert len(store.claim(10, LEASE)) == 2
    assert store.claim(10, LEASE) == []


def test_claim_leases_and_counts_the_attempt(store: JobStore, clock: FakeClock) -> None:
    job = add_one(store, clock)
    [claimed] = store.claim(5, LEASE)
    assert claimed.id == job.id
    assert claimed.state is JobState.RUNNING
    assert claimed.attempts == 1
    assert claimed.lease_token
    assert claimed.lease_expires_at == clock.now() + timedelta(seconds=LEASE)
    assert claimed.started_at == clock.now()
    assert stored(store, job.id).state is JobState.RUNNING
    assert store.claim(5, LEASE) == []  # leased jobs are not handed out twice


def test_delayed_jobs_wait_for_run_at(store: JobStore, clock: FakeClock) -> None:
    job = add_one(store, clock, delay=60)
    assert store.claim(5, LEASE) == []
    assert store.next_due_at() == job.run_at
    clock.advance(59.9)
    assert store.claim(5, LEASE) == []
    clock.advance(0.1)
    assert [j.id for j in store.claim(5, LEASE)] == [job.id]


def test_claim_filters_by_queue(store: JobStore, clock: FakeClock) -> None:
    mail = add_one(store, clock, queue="mail")
    add_one(store, clock, queue="images")
    assert [j.id for j in store.claim(10, LEASE, queues=["mail"])] == [mail.id]
    assert store.claim(10, LEASE, queues=["mail"]) == []
    assert store.claim(10, LEASE, queues=[]) == []
    assert len(store.claim(10, LEASE, queues=["images", "other"])) == 1


def test_claim_by_ids_takes_only_those_that_are_due(store: JobStore, clock: FakeClock) -> None:
    a = add_one(store, clock)
    b = add_one(store, clock)
    later = add_one(store, clock, delay=100)
    claimed = store.claim(10, LEASE, ids=[a.id, later.id, "j_" + "f" * 32])
    assert [j.id for j in claimed] == [a.id]
    assert store.claim(10, LEASE, ids=[a.id]) == []  # already leased
    assert [j.id for j in store.claim(10, LEASE)] == [b.id]


# -- finishing ---------------------------------------------------------------


def test_finish_success_records_result(store: JobStore, clock: FakeClock) -> None:
    add_one(store, clock)
    [job] = store.claim(1, LEASE)
    clock.advance(2)
    assert store.finish([succeed(job, {"ok": True, "items": [1, 2]})]) == [True]
    done = stored(store, job.id)
    assert done.state is JobState.SUCCEEDED
    assert done.result == {"ok": True, "items": [1, 2]}
    assert done.finished_at == clock.now()
    assert done.lease_token is None
    assert store.claim(1, LEASE) == []


def test_finish_requires_the_current_lease(store: JobStore, clock: FakeClock) -> None:
    add_one(store, clock)
    [job] = store.claim(1, LEASE)
    wrong = Completion(job.id, "not-the-token", JobState.SUCCEEDED, result=1)
    assert store.finish([wrong]) == [False]
    assert stored(store, job.id).state is JobState.RUNNING
    assert store.finish([succeed(job, 1)]) == [True]
    assert store.finish([succeed(job, 2)]) == [False]  # finishing twice changes nothing
    assert stored(store, job.id).result == 1


def test_finish_unknown_job_is_refused(store: JobStore, clock: FakeClock) -> None:
    ghost = Completion("j_" + "a" * 32, "token", JobState.SUCCEEDED)
    assert store.finish([ghost]) == [False]


def test_finish_many_applies_each_on_its_own(store: JobStore, clock: FakeClock) -> None:
    for _ in range(3):
        add_one(store, clock)
    a, b, c = store.claim(3, LEASE)
    results = store.finish(
        [
            succeed(a, "a"),
            Completion(b.id, "stale", JobState.SUCCEEDED),
            Completion(c.id, token(c), JobState.DEAD, error="boom"),
        ]
    )
    assert results == [True, False, True]
    assert stored(store, a.id).state is JobState.SUCCEEDED
    assert stored(store, b.id).state is JobState.RUNNING
    assert stored(store, c.id).state is JobState.DEAD
    assert stored(store, c.id).last_error == "boom"


def test_retry_waits_until_retry_at(store: JobStore, clock: FakeClock) -> None:
    add_one(store, clock)
    [job] = store.claim(1, LEASE)
    retry_at = clock.now() + timedelta(seconds=10)
    completion = Completion(job.id, token(job), JobState.RETRYING, error="flaky", retry_at=retry_at)
    assert store.finish([completion]) == [True]
    waiting = stored(store, job.id)
    assert waiting.state is JobState.RETRYING
    assert waiting.last_error == "flaky"
    assert waiting.run_at == retry_at
    assert waiting.finished_at is None
    assert store.claim(1, LEASE) == []
    clock.advance(10)
    [again] = store.claim(1, LEASE)
    assert again.id == job.id and again.attempts == 2
    assert again.lease_token != job.lease_token


# -- leases ------------------------------------------------------------------


def test_expired_lease_makes_job_claimable_and_counts_attempt(
    store: JobStore, clock: FakeClock
) -> None:
    add_one(store, clock, max_attempts=3)
    [first] = store.claim(1, LEASE)
    clock.advance(LEASE - 1)
    assert store.claim(1, LEASE) == []
    clock.advance(1)
    [second] = store.claim(1, LEASE)
    assert second.id == first.id
    assert second.attempts == 2
    assert store.finish([succeed(first)]) == [False]  # the old lease is worthless
    assert store.finish([succeed(second)]) == [True]


def test_a_lapsed_lease_no_claim_has_reaped_still_takes_its_outcome(
    store: JobStore, clock: FakeClock
) -> None:
    """Nothing ran beside a late attempt until a claim reaps its lease, so its
    outcome is the job's one run and keeping it spares a second; once a claim has
    reaped the lease (and buried the job here, its attempts spent) it is refused."""
    kept = add_one(store, clock, max_attempts=3)
    [late] = store.claim(1, LEASE)
    clock.advance(LEASE + 5)
    assert store.finish([succeed(late, {"late": True})]) == [True]
    done = stored(store, kept.id)
    assert done.state is JobState.SUCCEEDED and done.result == {"late": True}
    assert done.attempts == 1

    buried = add_one(store, clock, max_attempts=1)
    [reaped] = store.claim(1, LEASE)
    assert reaped.id == buried.id
    clock.advance(LEASE + 5)
    assert store.claim(1, LEASE) == []
    assert store.finish([succeed(reaped)]) == [False]
    assert stored(store, buried.id).state is JobState.DEAD


def test_lease_expiry_on_last_attempt_buries_the_job(store: JobStore, clock: FakeClock) -> None:
    job = add_one(store, clock, max_attempts=1)
    store.claim(1, LEASE)
    clock.advance(LEASE + 1)
    assert store.claim(1, LEASE) == []
    dead = stored(store, job.id)
    assert dead.state is JobState.DEAD
    assert dead.last_error is not None and "lease expired" in dead.last_error


def test_extend_lease(store: JobStore, clock: FakeClock) -> None:
    add_one(store, clock)
    [job] = store.claim(1, LEASE)
    clock.advance(LEASE - 5)
    assert store.extend_lease(job.id, token(job), LEASE)
    assert stored(store, job.id).lease_expires_at == clock.now() + timedelta(seconds=LEASE)
    assert not store.extend_lease(job.id, "wrong", LEASE)
    clock.advance(LEASE - 1)
    assert store.claim(1, LEASE) == []  # still held thanks to the extension
    clock.advance(2)
    assert not store.extend_lease(job.id, token(job), LEASE)  # too late: expired


def test_extend_leases_renews_each_live_lease_of_the_caller_in_one_call(
    store: JobStore, clock: FakeClock
) -> None:
    """The worker's renewal (one write for every lease it holds): each answer is what
    extend_lease would answer, in the order asked."""
    for _ in range(4):
        add_one(store, clock)
    a, b, c, d = store.claim(4, LEASE)
    assert store.finish([succeed(c)]) == [True]  # no longer running
    clock.advance(LEASE - 5)
    leases = [(a.id, token(a)), (b.id, "wrong"), (c.id, token(c)), ("j_unknown", "x")]
    assert store.extend_leases([*leases, (d.id, token(d))], LEASE) == [
        True, False, False, False, True,
    ]  # fmt: skip
    assert stored(store, a.id).lease_expires_at == clock.now() + timedelta(seconds=LEASE)
    assert stored(store, d.id).lease_expires_at == clock.now() + timedelta(seconds=LEASE)
    clock.advance(10)  # b's lease (not renewed) has lapsed, a's and d's have not
    assert store.extend_leases([(b.id, token(b)), (a.id, token(a))], LEASE) == [False, True]
    assert store.extend_leases([], LEASE) == []


# -- cancel ------------------------------------------------------------------


def test_cancel_waiting_job(store: JobStore, clock: FakeClock) -> None:
    job = add_one(store, clock, tenant="t1", delay=30)
    cancelled = store.cancel(job.id, "t1")
    assert cancelled.state is JobState.CANCELLED
    assert cancelled.finished_at == clock.now()
    clock.advance(60)
    assert store.claim(1, LEASE) == []


def test_cancel_refuses_running_and_finished_jobs(store: JobStore, clock: FakeClock) -> None:
    job = add_one(store, clock)
    [running] = store.claim(1, LEASE)
    with pytest.raises(InvalidTransition):
        store.cancel(job.id)
    store.finish([succeed(running)])
    with pytest.raises(InvalidTransition):
        store.cancel(job.id)
    assert stored(store, job.id).state is JobState.SUCCEEDED


def test_cancel_unknown_or_foreign_job_is_not_found(store: JobStore, clock: FakeClock) -> None:
    job = add_one(store, clock, tenant="t1")
    with pytest.raises(JobNotFound):
        store.cancel("j_" + "b" * 32)
    with pytest.raises(JobNotFound):
        store.cancel(job.id, "t2")
    assert stored(store, job.id).state is JobState.QUEUED


# -- listing, dead letters, redrive -----------------------------------------


def test_list_filters_and_pages(store: JobStore, clock: FakeClock) -> None:
    ids = []
    for i in range(7):
        ids.append(add_one(store, clock, tenant="t1", queue="q" if i % 2 else "r").id)
        clock.advance(0.001)
    add_one(store, clock, tenant="t2")
    seen: list[str] = []
    cursor = None
    while True:
        page = store.list_jobs(JobQuery(tenant="t1", limit=3, cursor=cursor))
        seen.extend(j.id for j in page.jobs)
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert seen == ids
    only_q = store.list_jobs(JobQuery(tenant="t1", queue="q"))
    assert [j.id for j in only_q.jobs] == ids[1::2]
    assert store.list_jobs(JobQuery(tenant="t1", type="nope")).jobs == []
    assert len(store.list_jobs(JobQuery()).jobs) == 8


def test_list_rejects_bad_cursor_and_limit(store: JobStore, clock: FakeClock) -> None:
    with pytest.raises(BadRequest):
        store.list_jobs(JobQuery(cursor="%%%not-a-cursor"))
    with pytest.raises(BadRequest):
        store.list_jobs(JobQuery(limit=0))


def _bury(store: JobStore, clock: FakeClock, tenant: str = "default"):
    job = add_one(store, clock, tenant=tenant)
    [claimed] = store.claim(1, LEASE, ids=[job.id])
    store.finish([Completion(claimed.id, token(claimed), JobState.DEAD, error="nope")])
    return job


def test_dead_letters_are_listed_and_redriven(store: JobStore, clock: FakeClock) -> None:
    dead = _bury(store, clock, tenant="t1")
    alive = add_one(store, clock, tenant="t1")
    listed = store.list_jobs(JobQuery(tenant="t1", state=JobState.DEAD))
    assert [j.id for j in listed.jobs] == [dead.id]
    moved = store.redrive([dead.id, alive.id], tenant="t1")
    assert [j.id for j in moved] == [dead.id]
    back = stored(store, dead.id)
    assert back.state is JobState.QUEUED and back.attempts == 0 and back.finished_at is None
    assert back.run_at == clock.now()
    assert stored(store, alive.id).state is JobState.QUEUED
    claimed = store.claim(5, LEASE)
    assert {j.id for j in claimed} == {dead.id, alive.id}


def test_redrive_respects_tenant(store: JobStore, clock: FakeClock) -> None:
    dead = _bury(store, clock, tenant="t1")
    assert store.redrive([dead.id], tenant="t2") == []
    assert stored(store, dead.id).state is JobState.DEAD


# -- counts, counters, purge -------------------------------------------------


def test_counts_by_queue_and_state(store: JobStore, clock: FakeClock) -> None:
    add_one(store, clock, queue="a")
    add_one(store, clock, queue="a")
    add_one(store, clock, queue="b", delay=5)
    store.claim(1, LEASE, queues=["a"])
    assert store.counts() == {
        ("a", JobState.QUEUED): 1,
        ("a", JobState.RUNNING): 1,
        ("b", JobState.QUEUED): 1,
    }


def test_counters_follow_every_transition(store: JobStore, clock: FakeClock) -> None:
    for _ in range(4):
        add_one(store, clock, queue="q", max_attempts=2)
    a, b, c, _d = store.claim(4, LEASE)
    store.finish(
        [
            succeed(a),
            Completion(b.id, token(b), JobState.RETRYING, error="x", retry_at=clock.now()),
            Completion(c.id, token(c), JobState.DEAD, error="y"),
        ]
    )
    clock.advance(LEASE + 1)  # d's lease expires: a failed attempt, retried
    store.claim(0, LEASE)
    store.claim(10, LEASE)  # reaps d, re-claims b and d
    extra = add_one(store, clock, queue="q")
    store.cancel(extra.id)
    totals = {
        (k.event): v for k, v in store.counters().items() if k.queue == "q" and k.type == "echo"
    }
    assert totals == {
        "enqueued": 5,
        "succeeded": 1,
        "failed": 3,
        "retried": 2,
        "dead": 1,
        "cancelled": 1,
    }
    assert CounterKey("q", "echo", "enqueued") in store.counters()


def test_idempotent_replay_does_not_count_as_enqueued(store: JobStore, clock: FakeClock) -> None:
    store.add([new_job(clock, idempotency_key="k")])
    store.add([new_job(clock, idempotency_key="k")])
    assert store.counters()[CounterKey("default", "echo", "enqueued")] == 1


def test_next_due_at_sees_waiting_jobs_and_leases(store: JobStore, clock: FakeClock) -> None:
    assert store.next_due_at() is None
    later = add_one(store, clock, delay=100)
    assert store.next_due_at() == later.run_at
    add_one(store, clock, delay=0)
    [running] = store.claim(1, LEASE)
    assert store.next_due_at() == running.lease_expires_at


def test_purge_removes_only_old_finished_jobs(store: JobStore, clock: FakeClock) -> None:
    done = add_one(store, clock)
    [claimed] = store.claim(1, LEASE)
    store.finish([succeed(claimed)])
    waiting = add_one(store, clock)
    clock.advance(3600)
    fresh = add_one(store, clock, delay=0)
    [fresh_claimed] = store.claim(1, LEASE, ids=[fresh.id])
    store.finish([succeed(fresh_claimed)])
    assert store.purge(clock.now() - timedelta(seconds=60)) == 1
    assert store.get(done.id) is None
    assert store.get(waiting.id) is not None
    assert store.get(fresh.id) is not None


# -- the invalidation epochs (JobStore.cache_epoch(tenant)) --------------------


def _epochs(store: JobStore, *tenants: str) -> dict[str, int]:
    return {tenant: store.cache_epoch(tenant) for tenant in tenants}


def test_cache_epoch_of_a_tenant_never_touched_is_zero(store: JobStore) -> None:
    assert _epochs(store, "t1", "nobody", "") == {"t1": 0, "nobody": 0, "": 0}


def test_cache_epoch_grows_with_a_redrive_that_moves_a_job(
    store: JobStore, clock: FakeClock
) -> None:
    dead = _bury(store, clock, tenant="t1")
    before = _epochs(store, "t1", "t2")
    assert store.redrive([dead.id], tenant="t2") == []  # another tenant's: nothing moves
    assert store.redrive(["j_" + "c" * 32]) == []
    assert _epochs(store, "t1", "t2") == before
    assert [j.id for j in store.redrive([dead.id], tenant="t1")] == [dead.id]
    after = _epochs(store, "t1", "t2")
    assert after["t1"] > before["t1"]
    assert after["t2"] == before["t2"]  # t2's cached answers stay true: not moved
    assert store.redrive([dead.id]) == []  # no longer dead
    assert _epochs(store, "t1", "t2") == after


def test_an_operators_redrive_moves_exactly_the_tenants_it_touched(
    store: JobStore, clock: FakeClock
) -> None:
    """A redrive across tenants (no tenant given) bumps each tenant whose jobs moved,
    once or more, and no other; the ids it skipped (not dead) name no tenant."""
    one, two = _bury(store, clock, tenant="t1"), _bury(store, clock, tenant="t2")
    also_one = _bury(store, clock, tenant="t1")
    waiting = add_one(store, clock, tenant="t3")
    before = _epochs(store, "t1", "t2", "t3", "t4")
    moved = store.redrive([one.id, two.id, also_one.id, waiting.id])
    assert sorted(j.id for j in moved) == sorted([one.id, two.id, also_one.id])
    after = _epochs(store, "t1", "t2", "t3", "t4")
    assert after["t1"] > before["t1"] and after["t2"] > before["t2"]
    assert (after["t3"], after["t4"]) == (before["t3"], before["t4"])


def test_cache_epoch_grows_with_a_purge_that_deletes(store: JobStore, clock: FakeClock) -> None:
    add_one(store, clock, tenant="t1")
    [claimed] = store.claim(1, LEASE)
    store.finish([succeed(claimed)])
    before = _epochs(store, "t1", "t2")
    assert store.purge(clock.now() - timedelta(seconds=60)) == 0
    assert _epochs(store, "t1", "t2") == before
    clock.advance(3600)
    assert store.purge(clock.now()) == 1
    after = _epochs(store, "t1", "t2")
    assert after["t1"] > before["t1"] and after["t2"] == before["t2"]


def test_a_purge_moves_exactly_the_tenants_it_deleted_from(
    store: JobStore, clock: FakeClock
) -> None:
    """Tenants whose finished jobs a purge leaves (too recent, or still running) keep
    their epochs; each tenant it deleted from moves."""
    old = [_bury(store, clock, tenant=t) for t in ("t1", "t2", "t1")]
    clock.advance(60)
    recent = _bury(store, clock, tenant="t3")
    add_one(store, clock, tenant="t4")  # waiting: never purged
    before = _epochs(store, "t1", "t2", "t3", "t4")
    assert store.purge(clock.now() - timedelta(seconds=30)) == len(old)
    after = _epochs(store, "t1", "t2", "t3", "t4")
    assert after["t1"] > before["t1"] and after["t2"] > before["t2"]
    assert (after["t3"], after["t4"]) == (before["t3"], before["t4"])
    assert store.get(recent.id) is not None


def test_a_discard_moves_exactly_the_tenants_it_deleted_from(
    store: JobStore, clock: FakeClock
) -> None:
    one, two = _bury(store, clock, tenant="t1"), _bury(store, clock, tenant="t2")
    three = _bury(store, clock, tenant="t3")
    before = _epochs(store, "t1", "t2", "t3")
    assert store.discard([two.id], tenant="t1") == []  # another tenant's: nothing
    assert _epochs(store, "t1", "t2", "t3") == before
    assert sorted(store.discard([one.id, two.id])) == sorted([one.id, two.id])
    after = _epochs(store, "t1", "t2", "t3")
    assert after["t1"] > before["t1"] and after["t2"] > before["t2"]
    assert after["t3"] == before["t3"] and store.get(three.id) is not None


def test_a_redrive_over_many_tenants_bumps_each_of_them(store: JobStore, clock: FakeClock) -> None:
    """More jobs and epochs than one transaction holds actions for (DynamoDB: 100),
    so a store that packs epoch bumps beside the jobs must make room for them.
    (Purge and discard pack theirs the same way: dynamodb_txn.Transactions.apply.)"""
    tenants = [f"m{i:02d}" for i in range(51)]  # 51 jobs and 51 epochs: 102 actions
    store.add([new_job(clock, tenant=t, max_attempts=1) for t in tenants])
    claimed = store.claim(len(tenants), LEASE)
    assert len(claimed) == len(tenants)
    done = [Completion(j.id, token(j), JobState.DEAD, error="x") for j in claimed]
    assert store.finish(done) == [True] * len(done)
    before = _epochs(store, *tenants)
    assert len(store.redrive([j.id for j in claimed])) == len(tenants)
    after = _epochs(store, *tenants)
    assert [t for t in tenants if after[t] <= before[t]] == []


def test_cache_epoch_ignores_changes_no_cached_answer_depends_on(
    store: JobStore, clock: FakeClock
) -> None:
    """Add, claim, finish, extend and cancel never change a finished job's answer,
    so they leave the epoch alone and caches keep their entries through them."""
    before = _epochs(store, "default")
    for _ in range(3):
        add_one(store, clock, max_attempts=1)
    waiting = add_one(store, clock, delay=60)
    a, b, c = store.claim(3, LEASE)
    assert store.extend_lease(c.id, token(c), LEASE)
    store.finish([succeed(a), Completion(b.id, token(b), JobState.DEAD, error="x")])
    store.cancel(waiting.id)
    clock.advance(LEASE + 1)
    store.claim(1, LEASE)  # reaps c: dead on its last attempt
    assert stored(store, c.id).state is JobState.DEAD
    assert _epochs(store, "default") == before


def test_cache_epoch_is_shared_by_every_handle_on_the_store(
    store: JobStore, clock: FakeClock
) -> None:
    """What one process changes, another process's read of the epoch sees: here a
    second handle where the backend has one (memory has no second process)."""
    other = _second_handle(store)
    try:
        before = other.cache_epoch("default")
        dead = _bury(store, clock)
        store.redrive([dead.id])
        assert other.cache_epoch("default") > before
    finally:
        if other is not store:
            other.close()


def _second_handle(store: JobStore) -> JobStore:
    from chalicelib.storage.memory import MemoryStore

    if isinstance(store, MemoryStore):
        return store
    from chalicelib.storage.postgres import PostgresStore
    from chalicelib.storage.sqlite import SQLiteStore

    if isinstance(store, SQLiteStore):
        return SQLiteStore(store.path, store.clock)
    if isinstance(store, PostgresStore):
        return PostgresStore(store.settings, store.clock)
    from chalicelib.storage.redis_store import RedisStore

    if isinstance(store, RedisStore):
        return RedisStore(store.settings, store.clock)
    from chalicelib.storage.dynamodb import DynamoStore

    target = getattr(store, "_target", store)  # the moto store runs behind _ShallowStack
    assert isinstance(target, DynamoStore)
    return DynamoStore(target.config, target.clock, ddb=target.ddb)


# -- attempt history (JobStore.attempts) --------------------------------------

ODD_TEXT = "nul\x00, lone \ud800, \ufffe, h\xe9llo \U0001f600"


def attempt_of(job, outcome: str = "retrying", **fields) -> Attempt:
    values = {
        "number": job.attempts,
        "started_at": job.started_at,
        "finished_at": job.started_at + timedelta(seconds=1.5),
        "worker": "host-a:4242",
        "outcome": outcome,
        "error_type": None if outcome == "succeeded" else "ValueError",
        "error": None if outcome == "succeeded" else f"boom on {job.attempts}",
        "traceback": None if outcome == "succeeded" else "Traceback ...\nValueError: boom\n",
        "next_delay": 2.25 if outcome == "retrying" else None,
    }
    values.update(fields)
    return Attempt(**values)


def finish_with(store: JobStore, clock: FakeClock, job, outcome: str = "retrying", **fields):
    state = JobState(outcome)
    attempt = attempt_of(job, outcome, **fields)
    retry_at = clock.now() if state is JobState.RETRYING else None
    completion = Completion(
        job.id, token(job), state, error=attempt.error, retry_at=retry_at, attempt=attempt
    )
    assert store.finish([completion]) == [True]
    return attempt


@pytest.fixture(params=BACKENDS)
def store_keeping_3(
    request: pytest.FixtureRequest, clock: FakeClock, tmp_path, monkeypatch: pytest.MonkeyPatch
):
    """Every backend opened with SPOOL_ATTEMPT_HISTORY=3."""
    monkeypatch.setenv("SPOOL_ATTEMPT_HISTORY", "3")
    with open_backend(request.param, clock, tmp_path, request) as opened:
        yield opened


def test_a_finish_records_its_attempt_exactly(store: JobStore, clock: FakeClock) -> None:
    job = add_one(store, clock)
    assert store.attempts(job.id) == []
    [claimed] = store.claim(1, LEASE)
    clock.advance(2)
    recorded = finish_with(
        store,
        clock,
        claimed,
        error=ODD_TEXT,
        traceback="Traceback (most recent call last):\n  " + ODD_TEXT + "\nValueError: x\n",
        worker="lambda:8f1c-" + ODD_TEXT,
        log_tail=("first line", ODD_TEXT),
    )
    assert store.attempts(job.id) == [recorded]
    [again] = store.claim(1, LEASE)
    done = finish_with(store, clock, again, "succeeded")
    assert store.attempts(job.id) == [recorded, done]
    assert store.attempts(job.id, tenant="default") == [recorded, done]


def test_attempts_of_an_unknown_or_foreign_job_are_none(store: JobStore, clock: FakeClock) -> None:
    job = add_one(store, clock, tenant="t1")
    assert store.attempts("j_" + "0" * 32) is None
    assert store.attempts(job.id, tenant="t2") is None
    assert store.attempts(job.id, tenant="t1") == []


def test_a_refused_finish_records_nothing(store: JobStore, clock: FakeClock) -> None:
    job = add_one(store, clock)
    [claimed] = store.claim(1, LEASE)
    stale = Completion(
        job.id,
        "not-the-token",
        JobState.DEAD,
        error="x",
        attempt=attempt_of(claimed, "dead"),
    )
    assert store.finish([stale]) == [False]
    assert store.attempts(job.id) == []
    ghost = Completion("j_" + "e" * 32, "t", JobState.DEAD, attempt=attempt_of(claimed, "dead"))
    assert store.finish([ghost]) == [False]
    assert store.attempts("j_" + "e" * 32) is None


def test_a_completion_without_an_attempt_records_none(store: JobStore, clock: FakeClock) -> None:
    job = add_one(store, clock)
    [claimed] = store.claim(1, LEASE)
    assert store.finish([succeed(claimed)]) == [True]
    assert store.attempts(job.id) == []


def test_each_completion_of_a_batch_records_its_own_attempt(
    store: JobStore, clock: FakeClock
) -> None:
    for _ in range(3):
        add_one(store, clock)
    a, b, c = store.claim(3, LEASE)
    attempts = {
        a.id: attempt_of(a, "succeeded"),
        b.id: attempt_of(b, "retrying"),
        c.id: attempt_of(c, "dead"),
    }
    completions = [
        Completion(a.id, token(a), JobState.SUCCEEDED, attempt=attempts[a.id]),
        Completion(b.id, token(b), JobState.RETRYING, retry_at=clock.now(), attempt=attempts[b.id]),
        Completion(c.id, token(c), JobState.DEAD, error="x", attempt=attempts[c.id]),
    ]
    assert store.finish(completions) == [True, True, True]
    for job_id, attempt in attempts.items():
        assert store.attempts(job_id) == [attempt]


def test_a_reaped_lease_records_a_lease_expired_attempt(store: JobStore, clock: FakeClock) -> None:
    job = add_one(store, clock, max_attempts=2)
    [first] = store.claim(1, LEASE)
    clock.advance(LEASE + 5)
    [second] = store.claim(1, LEASE)  # reaps the first attempt, then takes the job again
    assert first.started_at and first.lease_expires_at
    assert second.started_at and second.lease_expires_at
    expected = Attempt(
        number=1,
        started_at=first.started_at,
        finished_at=first.lease_expires_at,
        worker=worker_id.current(),  # the id this process recorded with its claim
        outcome="lease_expired",
        error=LEASE_EXPIRED_ERROR,
        next_delay=0.0,
    )
    assert store.attempts(job.id) == [expected]
    clock.advance(LEASE + 5)
    assert store.claim(1, LEASE) == []  # the second lease expires on the last attempt
    buried = replace(
        expected,
        number=2,
        started_at=second.started_at,
        finished_at=second.lease_expires_at,
        next_delay=None,
    )
    assert stored(store, job.id).state is JobState.DEAD
    assert store.attempts(job.id) == [expected, buried]


def test_a_job_buried_by_a_reap_is_logged_dead_once(
    store: JobStore, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    """No worker sees a job whose last lease expired: the reaping store logs its death."""
    job = add_one(store, clock, max_attempts=1)
    store.claim(1, LEASE)
    clock.advance(LEASE + 5)
    with caplog.at_level(logging.INFO, logger="spool.jobs"):
        assert store.claim(1, LEASE) == []
        assert store.claim(1, LEASE) == []  # nothing left to reap: no second line
    lines = [r for r in caplog.records if r.name == "spool.jobs"]
    assert [(r.levelno, getattr(r, "event", None), getattr(r, "job_id", None)) for r in lines] == [
        (logging.ERROR, "dead", job.id)
    ]
    (line,) = lines
    assert (line.tenant, line.type, line.queue) == (job.tenant, job.type, job.queue)  # type: ignore[attr-defined]
    assert (line.attempt, line.max_attempts) == (1, 1)  # type: ignore[attr-defined]
    assert line.error == LEASE_EXPIRED_ERROR  # type: ignore[attr-defined]


def test_history_keeps_the_last_n_attempts(store_keeping_3: JobStore, clock: FakeClock) -> None:
    store = store_keeping_3
    job = add_one(store, clock, max_attempts=10)
    recorded = []
    for _ in range(4):
        [claimed] = store.claim(1, LEASE)
        recorded.append(finish_with(store, clock, claimed))
    assert store.attempts(job.id) == recorded[-3:]
    store.claim(1, LEASE)
    clock.advance(LEASE + 1)
    [last] = store.claim(1, LEASE)  # the fifth attempt's lease expired
    recorded.append(finish_with(store, clock, last, "succeeded"))
    kept = history(store, job.id)
    assert [(a.number, a.outcome) for a in kept] == [
        (4, "retrying"),
        (5, "lease_expired"),
        (6, "succeeded"),
    ]
    assert kept[0] == recorded[3] and kept[2] == recorded[4]


def test_history_survives_a_redrive_and_leaves_with_a_purge(
    store: JobStore, clock: FakeClock
) -> None:
    job = add_one(store, clock, max_attempts=1)
    [claimed] = store.claim(1, LEASE)
    died = finish_with(store, clock, claimed, "dead")
    assert [j.id for j in store.redrive([job.id])] == [job.id]
    assert store.attempts(job.id) == [died]
    [again] = store.claim(1, LEASE)
    assert again.attempts == 1  # numbers restart with the fresh budget
    done = finish_with(store, clock, again, "succeeded")
    assert store.attempts(job.id) == [died, done]
    clock.advance(3600)
    assert store.purge(clock.now()) == 1
    assert store.attempts(job.id) is None


def test_an_oversized_attempt_keeps_the_end_of_its_traceback(
    store: JobStore, clock: FakeClock
) -> None:
    job = add_one(store, clock)
    [claimed] = store.claim(1, LEASE)
    frames = "".join(f'  File "handler.py", line {i}, in step{i}\n' for i in range(20_000))
    traceback = "Traceback (most recent call last):\n" + frames + "ValueError: the real cause\n"
    finish_with(store, clock, claimed, "dead", traceback=traceback, error="e" * 100_000)
    [kept] = history(store, job.id)
    assert kept.traceback is not None and kept.error is not None
    assert len(kept.traceback) < 20_000 and kept.traceback.endswith("ValueError: the real cause\n")
    assert "trimmed" in kept.traceback
    assert kept.error.startswith("eeee") and len(kept.error) < 100_000
    assert (kept.number, kept.outcome, kept.worker) == (1, "dead", "host-a:4242")


def test_an_attempt_with_a_huge_error_type_is_held_to_the_entry_s_size(
    store: JobStore, clock: FakeClock
) -> None:
    """history.fit held an entry to its size by its error, log tail and traceback only:
    a 2 MB error_type (a class named at run time) was kept whole on every store, and
    on DynamoDB put the item past 400 KB, so the finish could not be written at all."""
    job = add_one(store, clock)
    [claimed] = store.claim(1, LEASE)
    finish_with(store, clock, claimed, "dead", error_type="Fault" + "N" * 2_000_000)
    [kept] = history(store, job.id)
    assert kept.error_type is not None and kept.error_type.startswith("FaultNNN")
    assert len(kept.error_type) <= MAX_ERROR_TYPE_CHARS
    assert (kept.number, kept.outcome, kept.error) == (1, "dead", "boom on 1")


# -- due work and workers -----------------------------------------------------


def test_oldest_due_is_the_earliest_due_waiting_job_per_queue(
    store: JobStore, clock: FakeClock
) -> None:
    assert store.oldest_due() == {}
    old = add_one(store, clock, queue="mail", run_at=clock.now() - timedelta(seconds=90))
    add_one(store, clock, queue="mail", run_at=clock.now() - timedelta(seconds=10))
    add_one(store, clock, queue="mail", delay=30)  # not due yet
    images = add_one(store, clock, queue="images", run_at=clock.now() - timedelta(seconds=5))
    add_one(store, clock, queue="later", delay=60)
    assert store.oldest_due() == {"mail": old.run_at, "images": images.run_at}
    assert store.oldest_due(["images", "nothing"]) == {"images": images.run_at}
    assert store.oldest_due([]) == {}
    [running] = store.claim(1, LEASE, queues=["mail"])  # the oldest mail job starts
    assert running.id == old.id
    assert store.oldest_due(["mail"]) == {"mail": clock.now() - timedelta(seconds=10)}
    clock.advance(60)
    due = store.oldest_due()
    assert set(due) == {"mail", "images", "later"}
    assert due["later"] == clock.now()


def test_beats_show_which_workers_are_alive(store: JobStore, clock: FakeClock) -> None:
    assert store.live_workers(60) == []
    started = clock.now()
    store.beat("host-a:1", ["mail", "images"], started)
    store.beat("lambda:req-1", None, started)
    clock.advance(30)
    store.beat("host-a:1", ["mail", "images"], started)  # an upsert, not a second row
    live = store.live_workers(45)
    assert live == [
        WorkerBeat("host-a:1", ("mail", "images"), started, clock.now()),
        WorkerBeat("lambda:req-1", None, started, started),
    ]
    assert [b.worker for b in store.live_workers(29)] == ["host-a:1"]
    clock.advance(100)
    assert store.live_workers(60) == []
    assert [b.worker for b in store.live_workers(130)] == ["host-a:1", "lambda:req-1"]


def test_a_worker_that_signs_off_is_no_longer_live(store: JobStore, clock: FakeClock) -> None:
    started = clock.now()
    store.beat("host-a:1", None, started)
    store.beat("host-b:2", ["mail"], started)
    store.forget_worker("host-a:1")
    assert [b.worker for b in store.live_workers(60)] == ["host-b:2"]
    store.forget_worker("host-a:1")  # again, and one that never beat: nothing to do
    store.forget_worker("never-beat:3")
    assert [b.worker for b in store.live_workers(60)] == ["host-b:2"]
    store.beat("host-a:1", None, clock.now())  # the same name started again beats anew
    assert [b.worker for b in store.live_workers(60)] == ["host-a:1", "host-b:2"]


def test_a_finish_whose_error_holds_text_utf8_cannot_is_still_applied(
    store: JobStore, clock: FakeClock
) -> None:
    """A handler's message may hold NUL or a lone surrogate; the finish must not fail
    on it (a store that cannot hold a lone surrogate stores U+FFFD in its place)."""
    job = add_one(store, clock)
    [claimed] = store.claim(1, LEASE)
    failed = Completion(job.id, token(claimed), JobState.DEAD, error=ODD_TEXT)
    assert store.finish([failed]) == [True]
    dead = stored(store, job.id)
    assert dead.state is JobState.DEAD
    assert dead.last_error in (ODD_TEXT, ODD_TEXT.replace("\ud800", "\ufffd"))


def test_every_tenant_scoped_call_treats_another_tenant_s_job_as_unknown(
    store: JobStore, clock: FakeClock
) -> None:
    """What the HTTP edge answers 404 for "not yours" and "no such job" alike rests on
    each call, on every store, reading another tenant's job exactly as an unknown id:
    no JobNotFound versus InvalidTransition, no attempts, no webhooks, nothing moved."""
    dead = add_one(store, clock, tenant="acme", max_attempts=1)
    [claimed] = store.claim(1, LEASE)
    store.finish([Completion(dead.id, token(claimed), JobState.DEAD, error="boom")])
    waiting = add_one(store, clock, tenant="acme")
    unknown = "j_" + "0" * 32
    for job_id in (waiting.id, dead.id, unknown):
        with pytest.raises(JobNotFound):
            store.cancel(job_id, "other")
        assert store.attempts(job_id, "other") is None
        assert store.webhooks(job_id, "other") == []
        assert store.get(job_id, "other") is None
    assert store.redrive([dead.id, unknown], "other") == []
    assert store.discard([dead.id, unknown], "other") == []
    assert stored(store, waiting.id).state is JobState.QUEUED
    assert stored(store, dead.id).state is JobState.DEAD

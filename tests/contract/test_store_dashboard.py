"""The dashboard's store reads, on every backend (part of the JobStore contract;
the rules are in chalicelib/storage/base.py, the list in /work/briefs/store-changes.md).

state_counts, throughput, oldest_due(tenant=...), get_by_key and newest-first lists.
"""

from __future__ import annotations

from datetime import timedelta

import pytest

from chalicelib.clock import FakeClock
from chalicelib.errors import BadRequest
from chalicelib.models import Completion, JobQuery, JobState, MinuteTally
from chalicelib.storage.base import JobStore, minute_of
from tests.factories import new_job, token

LEASE = 30.0
Q, R, S, D, C = (
    JobState.QUEUED,
    JobState.RUNNING,
    JobState.SUCCEEDED,
    JobState.DEAD,
    JobState.CANCELLED,
)


def add(store: JobStore, clock: FakeClock, **fields):
    return store.add([new_job(clock, **fields)])[0].job


def true_counts(store: JobStore, tenant: str) -> dict[tuple[str, JobState], int]:
    """What counting the tenant's jobs one by one gives (the rule state_counts keeps)."""
    out: dict[tuple[str, JobState], int] = {}
    cursor = None
    while True:
        page = store.list_jobs(JobQuery(tenant=tenant, limit=1000, cursor=cursor))
        for job in page.jobs:
            out[(job.queue, job.state)] = out.get((job.queue, job.state), 0) + 1
        if page.next_cursor is None:
            return out
        cursor = page.next_cursor


def test_dashboard_state_counts_follow_every_transition(store: JobStore, clock: FakeClock) -> None:
    assert store.state_counts("acme") == {}
    jobs = [add(store, clock, tenant="acme", queue="mail", max_attempts=1) for _ in range(4)]
    add(store, clock, tenant="acme", queue="img")
    add(store, clock, tenant="other", queue="mail")
    assert store.state_counts("acme") == {("mail", Q): 4, ("img", Q): 1}
    assert store.state_counts("other") == {("mail", Q): 1}
    assert store.state_counts() == {("mail", Q): 5, ("img", Q): 1}

    store.cancel(jobs[0].id, "acme")
    claimed = {j.id: j for j in store.claim(10, LEASE, queues=["mail"])}
    assert len(claimed) == 4  # three of acme's, one of other's
    assert store.state_counts("acme") == {("mail", C): 1, ("mail", R): 3, ("img", Q): 1}
    one, two, _three = (claimed[j.id] for j in jobs[1:])  # _three: its lease runs out
    store.finish([Completion(one.id, token(one), S, result={"ok": 1})])
    store.finish([Completion(two.id, token(two), D, error="boom")])
    assert store.state_counts("acme") == {
        ("mail", C): 1,
        ("mail", S): 1,
        ("mail", D): 1,
        ("mail", R): 1,
        ("img", Q): 1,
    }
    clock.advance(LEASE + 1)  # three's lease expires: the reap buries it (max_attempts=1)
    store.claim(10, LEASE, queues=["nothing-here"])
    store.claim(10, LEASE, queues=["img"])
    assert store.state_counts("acme") == {
        ("mail", C): 1,
        ("mail", S): 1,
        ("mail", D): 2,
        ("img", R): 1,
    }
    store.redrive([two.id], "acme")
    assert store.state_counts("acme")[("mail", Q)] == 1
    assert store.state_counts("acme") == true_counts(store, "acme")
    clock.advance(10)
    store.purge(clock.now(), 1000)
    counts = store.state_counts("acme")
    assert counts == true_counts(store, "acme")
    assert ("mail", S) not in counts and ("mail", C) not in counts


def test_dashboard_throughput_tallies_attempts_per_minute(
    store: JobStore, clock: FakeClock
) -> None:
    start = clock.now()
    jobs = [add(store, clock, tenant="acme", queue="mail", max_attempts=2) for _ in range(3)]
    add(store, clock, tenant="other", queue="mail")
    claimed = {j.id: j for j in store.claim(10, LEASE)}
    first, second, third = (claimed[j.id] for j in jobs)
    store.finish(
        [
            Completion(first.id, token(first), S, result=None),
            Completion(
                second.id, token(second), JobState.RETRYING, error="x", retry_at=clock.now()
            ),
        ]
    )
    other = next(j for j in claimed.values() if j.tenant == "other")
    store.finish([Completion(other.id, token(other), S)])
    minute_one = minute_of(clock.now())
    clock.advance(LEASE + 61)  # third's lease expires; the reap is a failed attempt
    again = {j.id: j for j in store.claim(10, LEASE)}
    assert set(again) == {second.id, third.id}
    store.finish([Completion(second.id, token(again[second.id]), D, error="y")])
    minute_two = minute_of(clock.now())
    assert minute_two > minute_one
    tallies = store.throughput(start - timedelta(minutes=5), "acme")
    assert tallies == [
        MinuteTally("mail", minute_one, 1, 1),
        MinuteTally("mail", minute_two, 0, 2),
    ]
    assert store.throughput(start, None)[0] == MinuteTally("mail", minute_one, 2, 1)
    assert store.throughput(clock.now(), "acme") == [MinuteTally("mail", minute_two, 0, 2)]
    assert store.throughput(start, "nobody") == []
    store.cancel(add(store, clock, tenant="acme", queue="mail").id, "acme")  # counts nothing
    store.redrive([second.id], "acme")
    store.purge(clock.now() + timedelta(seconds=1), 1000)  # history stays
    assert store.throughput(start, "acme") == tallies


def test_dashboard_oldest_due_for_one_tenant(store: JobStore, clock: FakeClock) -> None:
    old = add(store, clock, tenant="acme", queue="mail", run_at=clock.now() - timedelta(seconds=90))
    add(store, clock, tenant="acme", queue="mail", run_at=clock.now() - timedelta(seconds=10))
    add(store, clock, tenant="acme", queue="later", delay=60)
    other = add(store, clock, tenant="other", queue="mail", run_at=clock.now() - timedelta(hours=1))
    assert store.oldest_due(tenant="acme") == {"mail": old.run_at}
    assert store.oldest_due(tenant="other") == {"mail": other.run_at}
    assert store.oldest_due(["later"], tenant="acme") == {}
    assert store.oldest_due(tenant="nobody") == {}
    clock.advance(61)
    assert set(store.oldest_due(tenant="acme")) == {"mail", "later"}


def test_dashboard_get_by_idempotency_key_is_per_tenant(store: JobStore, clock: FakeClock) -> None:
    job = add(store, clock, tenant="acme", idempotency_key="order-7")
    add(store, clock, tenant="other", idempotency_key="order-8")
    found = store.get_by_key("acme", "order-7")
    assert found is not None and found.id == job.id
    assert store.get_by_key("other", "order-7") is None
    assert store.get_by_key("acme", "order-8") is None
    assert store.get_by_key("acme", "nope") is None


def test_dashboard_newest_first_pages_down_without_gaps(store: JobStore, clock: FakeClock) -> None:
    made = []
    for i in range(7):
        made.append(add(store, clock, tenant="acme", queue="mail", payload={"i": i}))
        if i % 3 == 0:
            clock.advance(1)  # some share a created_at: the id breaks the tie
    add(store, clock, tenant="other")
    expected = [j.id for j in sorted(made, key=lambda j: (j.created_at, j.id), reverse=True)]
    seen: list[str] = []
    cursor = None
    while True:
        page = store.list_jobs(JobQuery(tenant="acme", limit=3, cursor=cursor, newest_first=True))
        seen.extend(j.id for j in page.jobs)
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert seen == expected
    newest_queued = store.list_jobs(
        JobQuery(tenant="acme", state=Q, queue="mail", limit=2, newest_first=True)
    )
    assert [j.id for j in newest_queued.jobs] == expected[:2]


def test_a_cursor_is_refused_by_a_listing_in_the_other_order(
    store: JobStore, clock: FakeClock
) -> None:
    """A cursor marks a place in one order: read in the other it named the jobs on the
    wrong side of that place (a GET /jobs cursor at the dashboard's newest-first list
    answered the jobs already seen, or an empty page), with no sign of the mistake."""
    for _ in range(5):
        add(store, clock, tenant="acme")
        clock.advance(1)
    for newest_first in (False, True):
        made = store.list_jobs(JobQuery(tenant="acme", limit=2, newest_first=newest_first))
        assert made.next_cursor is not None
        again = JobQuery(tenant="acme", limit=2, cursor=made.next_cursor, newest_first=newest_first)
        assert len(store.list_jobs(again).jobs) == 2  # its own order takes it
        other = JobQuery(
            tenant="acme", limit=2, cursor=made.next_cursor, newest_first=not newest_first
        )
        with pytest.raises(BadRequest, match="order"):
            store.list_jobs(other)


def test_dashboard_discard_deletes_only_the_tenants_dead_jobs(
    store: JobStore, clock: FakeClock
) -> None:
    jobs = [
        add(store, clock, tenant="acme", max_attempts=1, idempotency_key=f"k{i}") for i in range(3)
    ]
    theirs = add(store, clock, tenant="other", max_attempts=1)
    claimed = {j.id: j for j in store.claim(10, LEASE)}
    for job in (jobs[0], jobs[1], theirs):
        store.finish([Completion(job.id, token(claimed[job.id]), D, error="x")])
    store.finish([Completion(jobs[2].id, token(claimed[jobs[2].id]), S)])
    epochs = {t: store.cache_epoch(t) for t in ("acme", "other")}
    assert store.discard([jobs[2].id, theirs.id, "j_" + "0" * 32], "acme") == []
    assert {t: store.cache_epoch(t) for t in ("acme", "other")} == epochs
    gone = store.discard([jobs[0].id, jobs[1].id, jobs[0].id, theirs.id], "acme")
    assert sorted(gone) == sorted([jobs[0].id, jobs[1].id])
    assert store.cache_epoch("acme") > epochs["acme"]
    assert store.cache_epoch("other") == epochs["other"]  # its job was not touched
    assert store.get(jobs[0].id) is None and store.attempts(jobs[0].id) is None
    assert store.get(theirs.id) is not None and store.get(jobs[2].id) is not None
    assert store.get_by_key("acme", "k0") is None
    assert store.state_counts("acme") == {(jobs[2].queue, S): 1}
    again = store.add([new_job(clock, tenant="acme", idempotency_key="k0")])[0]
    assert again.created  # the key went with the job

"""The backlog cap in the store's add and redrive, on every backend (the rules are in
chalicelib/storage/base.py, Backlog): an add (or redrive) that would take a tenant's
waiting jobs past the cap is refused with BacklogFull and stores none of it, counted
in the same atomic step as the write where the store allows it."""

from __future__ import annotations

import pytest

from chalicelib.clock import FakeClock
from chalicelib.models import Completion, JobQuery, JobState
from chalicelib.storage.base import Backlog, BacklogFull, JobStore
from tests.factories import new_job

LEASE = 30.0


def jobs_of(store: JobStore, tenant: str) -> int:
    return len(store.list_jobs(JobQuery(tenant=tenant, limit=1000)).jobs)


def test_an_add_crossing_the_cap_is_refused_and_stores_none_of_it(
    store: JobStore, clock: FakeClock
) -> None:
    cap = Backlog("acme", 5)
    store.add([new_job(clock, tenant="acme") for _ in range(3)], cap)
    store.add([new_job(clock, tenant="other") for _ in range(4)])  # not acme's backlog
    with pytest.raises(BacklogFull) as refused:
        store.add([new_job(clock, tenant="acme") for _ in range(3)], cap)
    assert (refused.value.waiting, refused.value.jobs, refused.value.backlog) == (3, 3, 5)
    assert store.waiting_count("acme") == 3 and jobs_of(store, "acme") == 3
    # Exactly the room fits; then a single job no longer does.
    assert all(r.created for r in store.add([new_job(clock, tenant="acme") for _ in range(2)], cap))
    with pytest.raises(BacklogFull):
        store.add([new_job(clock, tenant="acme")], cap)
    with pytest.raises(BacklogFull):
        store.add([new_job(clock, tenant="acme", delay=3600)], cap)  # delayed jobs wait too
    assert jobs_of(store, "acme") == 5
    assert store.add([new_job(clock, tenant="other")], Backlog("other", 5))[0].created


def test_a_refused_keyed_batch_stores_none_of_its_keys(store: JobStore, clock: FakeClock) -> None:
    cap = Backlog("acme", 2)
    store.add([new_job(clock, tenant="acme", idempotency_key="a")], cap)
    batch = [new_job(clock, tenant="acme", idempotency_key=k) for k in ("b", "c")]
    with pytest.raises(BacklogFull):
        store.add(batch, cap)
    assert store.get_by_key("acme", "b") is None and store.get_by_key("acme", "c") is None
    assert jobs_of(store, "acme") == 1


def test_repeats_take_no_room_and_pass_a_full_backlog(store: JobStore, clock: FakeClock) -> None:
    cap = Backlog("acme", 2)
    first = store.add([new_job(clock, tenant="acme", idempotency_key=k) for k in "ab"], cap)
    again = store.add([new_job(clock, tenant="acme", idempotency_key=k) for k in "ab"], cap)
    assert [r.created for r in again] == [False, False]
    assert [r.job.id for r in again] == [r.job.id for r in first]
    # A key repeated inside a batch is one job: "c" twice needs one room, and none is left.
    with pytest.raises(BacklogFull) as refused:
        store.add([new_job(clock, tenant="acme", idempotency_key="c") for _ in range(2)], cap)
    assert refused.value.jobs == 1


def test_only_waiting_jobs_take_room(store: JobStore, clock: FakeClock) -> None:
    cap = Backlog("acme", 2)
    store.add([new_job(clock, tenant="acme") for _ in range(2)], cap)
    with pytest.raises(BacklogFull):
        store.add([new_job(clock, tenant="acme")], cap)
    [running, other] = store.claim(2, LEASE)
    assert store.finish([Completion(running.id, running.lease_token or "", JobState.SUCCEEDED)])
    # One finished and one running: neither waits, so two fit again.
    assert len(store.add([new_job(clock, tenant="acme") for _ in range(2)], cap)) == 2
    assert other.state is JobState.RUNNING


def test_more_is_room_kept_for_the_rest_of_the_request(store: JobStore, clock: FakeClock) -> None:
    store.add([new_job(clock, tenant="acme") for _ in range(3)])
    with pytest.raises(BacklogFull) as refused:
        store.add([new_job(clock, tenant="acme")], Backlog("acme", 5, more=2))
    assert refused.value.jobs == 3
    assert jobs_of(store, "acme") == 3
    assert store.add([new_job(clock, tenant="acme")], Backlog("acme", 5, more=1))[0].created


def dead_jobs(store: JobStore, clock: FakeClock, tenant: str, n: int) -> list[str]:
    ids = [
        r.job.id
        for r in store.add([new_job(clock, tenant=tenant, max_attempts=1) for _ in range(n)])
    ]
    claimed = store.claim(n, LEASE)
    done = [Completion(j.id, j.lease_token or "", JobState.DEAD, error="no") for j in claimed]
    assert store.finish(done) == [True] * n
    return ids


def test_a_capped_redrive_moves_what_fits_and_refuses_when_nothing_does(
    store: JobStore, clock: FakeClock
) -> None:
    dead = dead_jobs(store, clock, "acme", 4)
    store.add([new_job(clock, tenant="acme") for _ in range(2)])  # 2 waiting of 4
    cap = Backlog("acme", 4)
    moved = store.redrive(dead, "acme", cap)
    assert [j.id for j in moved] == dead[:2]  # the first that fit, in the order named
    assert store.waiting_count("acme") == 4
    with pytest.raises(BacklogFull) as refused:
        store.redrive(dead[2:], "acme", cap)
    assert (refused.value.waiting, refused.value.backlog) == (4, 4)
    assert store.waiting_count("acme") == 4
    assert store.redrive(dead[:2], "acme", cap) == []  # none of them dead: nothing to refuse
    assert len(store.redrive(dead[2:], "acme", Backlog("acme", 6))) == 2


def test_another_tenant_s_dead_jobs_take_no_room_in_a_capped_redrive(
    store: JobStore, clock: FakeClock
) -> None:
    theirs = dead_jobs(store, clock, "other", 2)
    mine = dead_jobs(store, clock, "acme", 1)
    store.add([new_job(clock, tenant="acme")])  # 1 waiting of 2: room for one
    cap = Backlog("acme", 2)
    # Named first, the other tenant's dead jobs neither fill the room nor, with none
    # left, turn the redrive into a refusal: they are no job of this tenant's.
    moved = store.redrive([*theirs, *mine], "acme", cap)
    assert [j.id for j in moved] == mine
    assert store.redrive(theirs, "acme", cap) == []
    assert store.waiting_count("other") == 0

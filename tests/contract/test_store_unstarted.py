"""An attempt is spent when its handler may have started, not when it was claimed.

A worker claims ahead of its free threads (prefetch) with `claim(started=False)`
and calls `start` just before each handler. A lease that lapses on a job never
started (its worker died with it in the prefetch buffer, or the claim's reply
was lost) gives the attempt back; a started one spends it, so a job whose
handler kills its worker still ends dead."""

from __future__ import annotations

from chalicelib.clock import FakeClock
from chalicelib.models import Completion, CounterKey, JobState
from chalicelib.storage.base import JobStore
from tests.factories import history, new_job, stored, token

LEASE = 30.0


def _add(store: JobStore, clock: FakeClock, **fields):
    return store.add([new_job(clock, **fields)])[0].job


def _events(store: JobStore) -> dict[str, int]:
    return {
        k.event: v
        for k, v in store.counters().items()
        if k.queue == "default" and k.type == "echo" and v
    }


def test_a_lapsed_lease_spends_only_the_started_jobs_attempt(
    store: JobStore, clock: FakeClock
) -> None:
    jobs = [_add(store, clock, max_attempts=3) for _ in range(3)]
    claimed = store.claim(10, LEASE, started=False)
    assert sorted(j.id for j in claimed) == sorted(j.id for j in jobs)
    assert all(j.attempts == 1 for j in claimed)  # the claim counts it, for the handler
    ran, *waited = claimed
    assert store.start([(ran.id, token(ran))]) == [True]
    clock.advance(LEASE + 1)
    # A job of higher priority is what the reaping claim takes, so the others are
    # left as the reap put them.
    urgent = _add(store, clock, priority=9)
    [taken] = store.claim(1, LEASE, started=False)
    assert taken.id == urgent.id
    after = {j.id: stored(store, j.id) for j in claimed}
    assert (after[ran.id].state, after[ran.id].attempts) == (JobState.RETRYING, 1)
    for job in waited:
        assert (after[job.id].state, after[job.id].attempts) == (JobState.QUEUED, 0)
        assert after[job.id].run_at <= clock.now()
        assert after[job.id].lease_token is None
        assert store.attempts(job.id) == []  # nothing ran: nothing to record
    assert [a.outcome for a in history(store, ran.id)] == ["lease_expired"]
    events = _events(store)
    assert (events.get("failed"), events.get("retried")) == (1, 1)
    # Taken again, each is on its first attempt (the started one on its second).
    again = {j.id: j for j in store.claim(10, LEASE, started=False)}
    assert again[ran.id].attempts == 2
    assert [again[j.id].attempts for j in waited] == [1, 1]


def test_a_job_lost_unstarted_more_times_than_its_attempts_still_runs(
    store: JobStore, clock: FakeClock
) -> None:
    job = _add(store, clock, max_attempts=2)
    for _ in range(job.max_attempts + 1):
        [claimed] = store.claim(1, LEASE, started=False)
        assert claimed.attempts == 1
        clock.advance(LEASE + 1)
    [last] = store.claim(1, LEASE, started=False)
    assert last.attempts == 1
    assert store.start([(last.id, token(last))]) == [True]
    done = Completion(last.id, token(last), JobState.SUCCEEDED, result=1)
    assert store.finish([done]) == [True]
    assert stored(store, job.id).state is JobState.SUCCEEDED
    assert _events(store).get("failed") is None


def test_a_retrying_job_lost_unstarted_keeps_its_spent_attempts(
    store: JobStore, clock: FakeClock
) -> None:
    job = _add(store, clock, max_attempts=3)
    [first] = store.claim(1, LEASE, started=False)
    assert store.start([(first.id, token(first))]) == [True]
    failed = Completion(first.id, token(first), JobState.RETRYING, error="x", retry_at=clock.now())
    assert store.finish([failed]) == [True]
    [second] = store.claim(1, LEASE, started=False)
    assert second.attempts == 2
    clock.advance(LEASE + 1)
    [third] = store.claim(1, LEASE, started=False)  # reaps it, takes it again
    assert third.attempts == 2  # 1 spent + this claim's
    assert store.attempts(job.id) == []  # the finish carried none; the lapse adds none


def test_a_started_job_whose_lease_lapses_spends_its_attempts_and_dies(
    store: JobStore, clock: FakeClock
) -> None:
    """A handler that kills its worker each time must not loop for ever."""
    job = _add(store, clock, max_attempts=2)
    for number in (1, 2):
        [claimed] = store.claim(1, LEASE, started=False)
        assert claimed.attempts == number
        assert store.start([(claimed.id, token(claimed))]) == [True]
        clock.advance(LEASE + 1)
    assert store.claim(1, LEASE, started=False) == []
    buried = stored(store, job.id)
    assert (buried.state, buried.attempts) == (JobState.DEAD, 2)
    assert [a.outcome for a in history(store, job.id)] == ["lease_expired"] * 2
    assert store.counters()[CounterKey("default", "echo", "dead")] == 1


def test_a_claim_that_starts_by_default_spends_its_attempt(
    store: JobStore, clock: FakeClock
) -> None:
    job = _add(store, clock, max_attempts=1)
    store.claim(1, LEASE)
    clock.advance(LEASE + 1)
    assert store.claim(1, LEASE) == []
    assert stored(store, job.id).state is JobState.DEAD


def test_start_takes_only_the_callers_live_leases(store: JobStore, clock: FakeClock) -> None:
    a, b, c = (_add(store, clock) for _ in range(3))
    waiting = _add(store, clock, delay=3600)
    claimed = {j.id: j for j in store.claim(3, LEASE, started=False)}
    ca, cb = claimed[a.id], claimed[b.id]
    marks = [
        (ca.id, token(ca)),
        (cb.id, "not-the-token"),
        (waiting.id, "x"),
        ("no-such-job", "x"),
    ]
    assert store.start(marks) == [True, False, False, False]
    assert store.start([]) == []
    clock.advance(LEASE + 1)
    cc = claimed[c.id]
    assert store.start([(cc.id, token(cc))]) == [False]  # lapsed: not the caller's now
    # b was never started (its mark was refused), so its attempt comes back.
    store.claim(10, LEASE, started=False)
    assert {j: stored(store, j).attempts for j in (a.id, b.id, c.id)} == {
        a.id: 2,
        b.id: 1,
        c.id: 1,
    }

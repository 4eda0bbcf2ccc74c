"""A redrive gives a dead job at most the attempts a request could ask for now
(RedriveAttempts: the larger of SPOOL_MAX_ATTEMPTS and the handler's default), on
every store, in the redrive's own write. Found by review (s51): a job enqueued with
max_attempts=100 before the operator lowered the ceiling ran 100 times again on every
redrive, past the ceiling meant to bound the worker time one request buys."""

from __future__ import annotations

from typing import Any

from chalicelib.attempt_ceiling import RedriveAttempts
from chalicelib.clock import FakeClock
from chalicelib.models import Completion, JobState
from chalicelib.storage.base import Backlog, JobStore
from tests.factories import new_job

LEASE = 30.0


def dead(store: JobStore, clock: FakeClock, **fields: Any) -> str:
    [added] = store.add([new_job(clock, **fields)])
    [job] = store.claim(1, LEASE, ids=[added.job.id])
    done = Completion(job.id, job.lease_token or "", JobState.DEAD, error="no")
    assert store.finish([done]) == [True]
    return job.id


def test_a_redrive_cuts_max_attempts_to_the_ceiling(store: JobStore, clock: FakeClock) -> None:
    over = dead(store, clock, max_attempts=100)
    under = dead(store, clock, max_attempts=2)
    moved = store.redrive([over, under], attempts=RedriveAttempts(25))
    assert {j.id: j.max_attempts for j in moved} == {over: 25, under: 2}
    assert [store.get(i).max_attempts for i in (over, under)] == [25, 2]  # type: ignore[union-attr]


def test_a_handler_default_above_the_ceiling_still_stands(
    store: JobStore, clock: FakeClock
) -> None:
    mine = dead(store, clock, type_="long", max_attempts=90)
    other = dead(store, clock, type_="echo", max_attempts=90)
    bound = RedriveAttempts(10, {"long": 40})
    moved = store.redrive([mine, other], "t", Backlog("t", 100), attempts=bound)
    assert moved == []  # another tenant's: not moved, not cut
    moved = store.redrive([mine, other], attempts=bound)
    assert {j.id: j.max_attempts for j in moved} == {mine: 40, other: 10}


def test_without_a_bound_a_redrive_keeps_max_attempts(store: JobStore, clock: FakeClock) -> None:
    job_id = dead(store, clock, max_attempts=100)
    [moved] = store.redrive([job_id])
    assert moved.max_attempts == 100

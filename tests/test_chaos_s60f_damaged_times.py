"""A waiting or running job whose time (or a number the reaper needs) was edited into
something else is ended, never left, and never stalls the others.

Was (reproduced with spool serve, spool worker --burst and a SQLite file): a queued
job whose run_at was set to text was never claimed (SQLite orders text after every
integer, so `run_at <= now` never held): it stayed queued for good, counted in the
queue's depth yet left out of every listing; a running job whose lease_expires_at
was text was never reaped, so it stayed running for good. On Redis the reap and the
promotion of jobs falling due failed their script on a job whose attempts, priority
or created_at was no number: the CLAIM script raised, for every claim, and no job ran.

Now the claim takes such a job as due and makes it dead without running it (its
last_error names the column), the reaper takes an unreadable lease as expired (its
last_error says so, its attempt history stays readable), and Redis's reap and
promotion make such a job dead in place and go on with the others.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest

from chalicelib.clock import FakeClock
from chalicelib.handlers import Registry
from chalicelib.models import JobState
from chalicelib.storage.base import JobStore
from chalicelib.worker import Worker, WorkerConfig
from tests.backends import open_backend
from tests.factories import new_job
from tests.test_chaos_s60b_unreadable_rows import write

LEASE = 60.0


def raw(backend: str, s: Any, job_id: str, field: str) -> str | None:
    """One stored field, read around the decoder (which may refuse the record)."""
    if backend == "sqlite":
        found = s._db().execute(f"SELECT {field} FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return None if found[0] is None else str(found[0])
    value = s.client.hget(s._p + "j:" + job_id, field)
    return None if value is None else str(value.decode())


def drain(s: JobStore, reg: Registry) -> list[Any]:
    ran: list[Any] = []

    @reg.handler("echo", max_attempts=3)
    def echo(payload: dict[str, Any]) -> Any:
        ran.append(payload)
        return payload

    worker = Worker(s, reg, WorkerConfig(concurrency=1), rng=random.Random(1))
    try:
        worker.drain()
    finally:
        worker.close()
    return ran


def test_sqlite_a_queued_job_whose_run_at_is_text_is_made_dead_not_left_waiting(
    clock: FakeClock, tmp_path: Path, request: pytest.FixtureRequest, reg: Registry
) -> None:
    with open_backend("sqlite", clock, tmp_path, request) as s:
        jobs = [s.add([new_job(clock)])[0].job for _ in range(3)]
        write("sqlite", s, jobs[1].id, "run_at", "soon")
        assert len(drain(s, reg)) == 2
        assert raw("sqlite", s, jobs[1].id, "state") == "dead"
        error = raw("sqlite", s, jobs[1].id, "last_error") or ""
        assert "run_at is str 'soon'" in error, error
        assert error.endswith("so it was not run; repair the row and redrive the job, or delete it")
        assert JobState.QUEUED not in {state for _, state in s.counts()}
        [redriven] = s.redrive([jobs[1].id])  # the redrive sets run_at: readable again
        assert redriven.state is JobState.QUEUED


@pytest.mark.parametrize("backend", ["sqlite", "redis"])
def test_a_ready_job_whose_run_at_is_no_time_is_buried_naming_it(
    clock: FakeClock, tmp_path: Path, request: pytest.FixtureRequest, reg: Registry, backend: str
) -> None:
    with open_backend(backend, clock, tmp_path, request) as s:
        jobs = [s.add([new_job(clock)])[0].job for _ in range(2)]
        write(backend, s, jobs[0].id, "run_at", "soon")
        assert len(drain(s, reg)) == 1
        error = raw(backend, s, jobs[0].id, "last_error") or ""
        assert raw(backend, s, jobs[0].id, "state") == "dead"
        assert "run_at is " in error and "soon" in error, error


@pytest.mark.parametrize("backend", ["sqlite", "redis"])
def test_a_running_job_whose_lease_expiry_is_no_time_is_reaped(
    clock: FakeClock, tmp_path: Path, request: pytest.FixtureRequest, backend: str
) -> None:
    with open_backend(backend, clock, tmp_path, request) as s:
        job = s.add([new_job(clock)])[0].job
        assert [j.id for j in s.claim(1, LEASE)] == [job.id]
        write(backend, s, job.id, "lease_expires_at", "later")
        clock.advance(LEASE + 1)
        assert [j.id for j in s.claim(1, LEASE)] == [job.id]  # reaped, then taken again
        history = s.attempts(job.id)
        assert history is not None and [a.outcome for a in history] == ["lease_expired"]
        if backend == "sqlite":  # Redis reaps by its lease index, whatever the field says
            assert history[0].error is not None and "lease_expires_at" in history[0].error


# A field the Redis reap or promotion reads as a number, set to text by hand.
REDIS_NUMBERS = ["attempts", "max_attempts", "priority", "created_at"]


@pytest.mark.parametrize("field", REDIS_NUMBERS)
def test_redis_a_lapsed_lease_on_a_damaged_hash_does_not_stall_the_claims(
    clock: FakeClock, tmp_path: Path, request: pytest.FixtureRequest, field: str
) -> None:
    with open_backend("redis", clock, tmp_path, request) as s:
        bad = s.add([new_job(clock)])[0].job
        assert [j.id for j in s.claim(1, LEASE)] == [bad.id]
        write("redis", s, bad.id, field, "x")
        clock.advance(LEASE + 1)
        good = s.add([new_job(clock)])[0].job
        assert [j.id for j in s.claim(5, LEASE)] == [good.id]
        assert raw("redis", s, bad.id, "state") == "dead"
        assert "cannot be read" in (raw("redis", s, bad.id, "last_error") or "")
        assert s.claim(5, LEASE) == []


@pytest.mark.parametrize("field", ["priority", "created_at"])
def test_redis_a_delayed_job_with_a_damaged_hash_does_not_stall_the_claims(
    clock: FakeClock, tmp_path: Path, request: pytest.FixtureRequest, field: str
) -> None:
    with open_backend("redis", clock, tmp_path, request) as s:
        later = clock.now().timestamp() + 30
        bad = s.add([new_job(clock, run_at=clock.now().fromtimestamp(later, clock.now().tzinfo))])
        bad_id = bad[0].job.id
        write("redis", s, bad_id, field, "x")
        clock.advance(31)
        good = s.add([new_job(clock)])[0].job
        assert [j.id for j in s.claim(5, LEASE)] == [good.id]
        assert raw("redis", s, bad_id, "state") == "dead"
        assert s.claim(5, LEASE) == []

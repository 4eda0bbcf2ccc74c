"""What a handler hands back that JSON or datetimes cannot hold: recorded, never stored raw.

A NaN or Infinity result would make the job's status unreadable to strict JSON
parsers; a RetryAfter past the datetime range used to kill the pool thread
(OverflowError), leaving the job to time out instead of retrying when asked.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from chalicelib.clock import FakeClock
from chalicelib.errors import RetryAfter
from chalicelib.handlers import Registry
from chalicelib.models import Job, JobState
from chalicelib.storage.memory import MemoryStore
from chalicelib.timebounds import MAX_DELAY_SECONDS
from chalicelib.worker import Worker, WorkerConfig
from tests.factories import new_job


def run_one(store: MemoryStore, clock: FakeClock, reg: Registry, type_: str) -> Job:
    added = store.add([new_job(clock, type_, max_attempts=3)])[0].job
    worker = Worker(store, reg, WorkerConfig(concurrency=1))
    try:
        stats = worker.drain()
    finally:
        worker.close()
    assert stats.timed_out == 0
    job = store.get(added.id)
    assert job is not None
    return job


@pytest.mark.parametrize(
    "result",
    [float("inf"), float("nan"), {"ratio": -float("inf")}, [1.0, [float("nan")]]],
    ids=["inf", "nan", "nested-inf", "nested-nan"],
)
def test_a_non_finite_result_is_never_stored(
    mem: MemoryStore, clock: FakeClock, result: Any
) -> None:
    reg = Registry()

    @reg.handler("ratio", max_attempts=3)
    def ratio(payload: dict[str, Any]) -> Any:
        return result

    job = run_one(mem, clock, reg, "ratio")
    assert job.state is JobState.DEAD
    assert job.result is None
    assert job.last_error is not None
    assert job.last_error.startswith("result is not JSON: it holds NaN or Infinity")


@pytest.mark.parametrize("seconds", [float("inf"), 1e12, MAX_DELAY_SECONDS * 10.0])
def test_retry_after_past_the_bound_waits_the_bound(
    mem: MemoryStore, clock: FakeClock, seconds: float
) -> None:
    reg = Registry()

    @reg.handler("later", max_attempts=3, timeout=5)
    def later(payload: dict[str, Any]) -> None:
        raise RetryAfter(seconds, "come back much later")

    job = run_one(mem, clock, reg, "later")
    assert job.state is JobState.RETRYING
    assert job.last_error is not None and "come back much later" in job.last_error
    assert job.run_at == clock.now() + timedelta(seconds=MAX_DELAY_SECONDS)

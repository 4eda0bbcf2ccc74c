"""What a handler's RetryAfter may carry: a number of seconds, checked when raised.

RetryAfter("30") (a Retry-After header's text passed on as is) failed inside the
worker: math.isnan refused the str, the attempt was logged as Spool's own error
and retried with the backoff instead of the 30 s asked. None silently meant the
backoff, True one second and NaN no wait at all.
"""

from __future__ import annotations

import math
import pickle
from datetime import timedelta
from fractions import Fraction
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


def run_once(store: MemoryStore, clock: FakeClock, reg: Registry, type_: str) -> Job:
    added = store.add([new_job(clock, type_, max_attempts=3)])[0].job
    worker = Worker(store, reg, WorkerConfig(concurrency=1))
    try:
        assert worker.process([added.id]) == {added.id: "retrying"}
    finally:
        worker.close()
    job = store.get(added.id)
    assert job is not None
    return job


@pytest.mark.parametrize(
    ("value", "said"),
    [
        ("30", "not '30' (str) (convert it: float(text))"),
        (b"30", "not b'30' (bytes)"),
        (None, "not None (NoneType)"),
        (True, "not True (bool)"),
        (timedelta(seconds=30), "(pass delay.total_seconds())"),
    ],
    ids=["str", "bytes", "none", "bool", "timedelta"],
)
def test_a_retry_after_that_is_no_number_is_refused_when_raised(value: Any, said: str) -> None:
    with pytest.raises(TypeError, match="RetryAfter takes a number of seconds") as refused:
        RetryAfter(value)
    assert said in str(refused.value)


def test_a_nan_retry_after_is_refused_when_raised() -> None:
    with pytest.raises(ValueError, match="RetryAfter takes a number of seconds, not NaN"):
        RetryAfter(math.nan)


@pytest.mark.parametrize(
    ("value", "seconds"),
    [(30, 30.0), (2.5, 2.5), (Fraction(1, 4), 0.25), (-5, -5.0), (10**400, math.inf)],
    ids=["int", "float", "fraction", "negative", "int-past-float"],
)
def test_a_number_is_kept_as_float_seconds(value: Any, seconds: float) -> None:
    exc = RetryAfter(value, "later")
    assert exc.seconds == seconds and type(exc.seconds) is float
    assert str(exc) == "later"


def test_a_retry_after_survives_pickling() -> None:
    # Exception's own pickling calls RetryAfter(message), which names no number.
    copy = pickle.loads(pickle.dumps(RetryAfter(42, "throttled")))
    assert (copy.seconds, str(copy)) == (42.0, "throttled")


def test_the_worker_records_the_refusal_and_retries_with_backoff(
    mem: MemoryStore, clock: FakeClock
) -> None:
    reg = Registry()

    @reg.handler("later", max_attempts=3, timeout=5, backoff=(2.0, 2.0))
    def later(payload: dict[str, Any]) -> None:
        raise RetryAfter("30")  # type: ignore[arg-type]

    job = run_once(mem, clock, reg, "later")
    assert job.state is JobState.RETRYING
    assert job.last_error is not None
    assert job.last_error.startswith("TypeError: RetryAfter takes a number of seconds, not '30'")
    assert "worker error" not in job.last_error  # the handler's mistake, not Spool's
    assert job.run_at <= clock.now() + timedelta(seconds=2)  # its backoff, not 30 s


def test_a_seconds_spoiled_after_raising_names_the_handler(
    mem: MemoryStore, clock: FakeClock
) -> None:
    reg = Registry()

    @reg.handler("spoiled", max_attempts=3, timeout=5, backoff=(2.0, 2.0))
    def spoiled(payload: dict[str, Any]) -> None:
        exc = RetryAfter(30, "come back")
        exc.seconds = "30"  # type: ignore[assignment]
        raise exc

    job = run_once(mem, clock, reg, "spoiled")
    assert job.state is JobState.RETRYING
    assert job.last_error is not None
    assert job.last_error.startswith("RetryAfter: come back [handler 'spoiled': RetryAfter takes")
    assert "worker error" not in job.last_error
    assert job.run_at <= clock.now() + timedelta(seconds=2)


def test_a_int_past_the_floats_waits_the_bound(mem: MemoryStore, clock: FakeClock) -> None:
    reg = Registry()

    @reg.handler("far", max_attempts=3, timeout=5)
    def far(payload: dict[str, Any]) -> None:
        raise RetryAfter(10**400, "much later")

    job = run_once(mem, clock, reg, "far")
    assert job.last_error == "RetryAfter: much later"
    assert job.run_at == clock.now() + timedelta(seconds=MAX_DELAY_SECONDS)

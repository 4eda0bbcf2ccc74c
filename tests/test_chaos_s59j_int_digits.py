"""A result's integer longer than a reader's Python converts is refused, whatever limit
the worker's own process runs under.

Was: the worker refused an integer of more than 4,300 digits only because its encoder
raised. A handler that raised the process's limit (`sys.set_int_max_str_digits(0)`, as a
number-crunching library may; or a worker started with PYTHONINTMAXSTRDIGITS=0) had such
a result stored, `succeeded`, and every reader with Python's default limit then failed on
it: the API answered 500 on that job's /status and on the whole tenant's GET /jobs (every
page holding it), and `spool jobs --json` stopped with "unexpected error". Now the bound
is Python's default (sys.int_info.default_max_str_digits), not the process's own.
"""

from __future__ import annotations

import json
import random
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from chalicelib.clock import FakeClock
from chalicelib.handlers import Registry
from chalicelib.models import JobState
from chalicelib.storage.base import JobStore
from chalicelib.worker import Worker, WorkerConfig
from tests.factories import new_job

DEFAULT_DIGITS = sys.int_info.default_max_str_digits
HUGE = 10**DEFAULT_DIGITS  # one digit more than a default reader converts


@pytest.fixture
def no_digit_limit() -> Iterator[None]:
    """The handler lifts the process's limit, as it may; put back after."""
    before = sys.get_int_max_str_digits()
    try:
        yield
    finally:
        sys.set_int_max_str_digits(before)


@pytest.mark.parametrize(
    "result", [HUGE, -HUGE, {"n": [1, HUGE]}], ids=["bare", "negative", "nested"]
)
def test_a_huge_integer_is_refused_when_the_handler_lifted_the_limit(
    store: JobStore, clock: FakeClock, reg: Registry, no_digit_limit: None, result: Any
) -> None:
    @reg.handler("lifts", max_attempts=1)
    def lifts(payload: dict[str, Any]) -> Any:
        sys.set_int_max_str_digits(0)
        return result

    @reg.handler("after", max_attempts=1)
    def after(payload: dict[str, Any]) -> str:
        return "ok"

    job = store.add([new_job(clock, "lifts", max_attempts=1)])[0].job
    other = store.add([new_job(clock, "after", max_attempts=1)])[0].job
    worker = Worker(store, reg, WorkerConfig(concurrency=1), rng=random.Random(1))
    try:
        worker.drain()
    finally:
        worker.close()
    sys.set_int_max_str_digits(DEFAULT_DIGITS)  # as every reader runs
    dead = store.get(job.id)
    assert dead is not None and dead.state is JobState.DEAD, dead
    assert dead.result is None
    assert dead.last_error == (
        f"result is not JSON: it holds an integer of more than {DEFAULT_DIGITS} digits "
        "(return it as a string)"
    )
    done = store.get(other.id)
    assert done is not None and done.state is JobState.SUCCEEDED and done.result == "ok"


def test_an_integer_of_exactly_the_default_digits_is_kept(
    store: JobStore, clock: FakeClock, reg: Registry, no_digit_limit: None
) -> None:
    largest = HUGE - 1  # DEFAULT_DIGITS nines: a default reader converts it

    @reg.handler("largest", max_attempts=1)
    def handler(payload: dict[str, Any]) -> Any:
        sys.set_int_max_str_digits(0)
        return {"n": largest}

    job = store.add([new_job(clock, "largest", max_attempts=1)])[0].job
    worker = Worker(store, reg, WorkerConfig(concurrency=1), rng=random.Random(1))
    try:
        worker.drain()
    finally:
        worker.close()
    sys.set_int_max_str_digits(DEFAULT_DIGITS)
    done = store.get(job.id)
    assert done is not None and done.state is JobState.SUCCEEDED
    assert json.loads(json.dumps(done.result)) == {"n": largest}

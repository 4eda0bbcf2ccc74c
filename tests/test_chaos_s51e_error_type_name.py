"""A handler's exception class name is held to a bound, as its message is, on every store.

Was: the message of a failure was cut to MAX_ERROR_CHARS, but its class's name was
kept whole, in the attempt's `error_type` and (for an exception with no message)
as the job's whole `last_error`. A class made at run time from a remote service's
words (`type(code, (Exception,), {})`, as error factories do) can be named anything:
a 2 MB name made a /status answer of megabytes on every store, and on DynamoDB the
job's item went past its 400 KB, so the outcome could not be written at all: the
worker took it for an outage and held every finished job's outcome for 60 s, while
the job sat `running` until its lease lapsed.

Now the name is cut at MAX_ERROR_TYPE_CHARS (models.error_type_name) wherever it
is written down: the attempt's error_type, last_error, the worker's log.
"""

from __future__ import annotations

import random
from typing import Any

import pytest

from chalicelib.clock import FakeClock
from chalicelib.handlers import Registry
from chalicelib.models import MAX_ERROR_CHARS, JobState
from chalicelib.storage.base import JobStore
from chalicelib.worker import Worker, WorkerConfig
from tests.factories import history, new_job

NAME = "Fault" + "N" * 2_000_000
BOUND = 200


@pytest.mark.parametrize("message", ["", "the service said no"], ids=["bare", "with-message"])
def test_a_huge_exception_class_name_is_cut_and_the_outcome_written(
    store: JobStore, clock: FakeClock, reg: Registry, message: str
) -> None:
    fault = type(NAME, (Exception,), {})

    @reg.handler("faulty", max_attempts=2, backoff=(1.0, 1.0))
    def faulty(payload: dict[str, Any]) -> None:
        raise fault(message) if message else fault()

    job = store.add([new_job(clock, "faulty", max_attempts=2)])[0].job
    worker = Worker(store, reg, WorkerConfig(concurrency=1), rng=random.Random(1))
    try:
        worker.drain()
        waiting = store.get(job.id)
        assert waiting is not None and waiting.state is JobState.RETRYING
        clock.advance(5)
        worker.drain()
    finally:
        worker.close()
    dead = store.get(job.id)
    assert dead is not None and dead.state is JobState.DEAD
    assert dead.last_error is not None and dead.last_error.startswith("FaultNNN")
    assert len(dead.last_error) <= BOUND + len(message) + 2
    assert message in dead.last_error
    attempts = history(store, job.id)
    assert [a.outcome for a in attempts] == ["retrying", "dead"]
    for attempt in attempts:
        assert attempt.error_type is not None and attempt.error_type.startswith("FaultNNN")
        assert len(attempt.error_type) <= BOUND
        assert len(attempt.error or "") <= MAX_ERROR_CHARS


def test_a_payload_check_s_huge_exception_class_name_is_cut_in_the_503() -> None:
    """The enqueue's answer names the check's exception too (handlers.PayloadCheck):
    a 2 MB name made a 2 MB 503 body."""
    from chalicelib.errors import Misconfigured
    from chalicelib.handlers import PayloadCheck

    with pytest.raises(Misconfigured) as refused, PayloadCheck("faulty", {}):
        raise type(NAME, (Exception,), {})()
    assert "FaultNNN" in refused.value.message
    assert len(refused.value.message) < BOUND + 300

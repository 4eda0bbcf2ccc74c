"""The worker's decisions after an attempt: retry, backoff, dead, and what it records.

Written to kill the mutants `make mutation` left alive in Worker.execute,
Worker._retry, Worker._failed and Worker._timeout (docs/testing.md):

- `_failed`'s fallback (the backoff itself failed, or an attempt of a job without
  a handler failed inside the worker): the retry it makes at once carries the
  worker error as the job's last_error; on the last attempt it buries the job,
  under the job's own lease, with that error; the log line names the job.
- `execute`: a handler's PermanentError, RetryAfter or other exception, and a
  payload its model refuses, are in the attempt's history with type and
  traceback; a RetryAfter's wait is the attempt's next_delay; a True or False
  result is stored as it is; a pydantic model holding datetimes and UUIDs is
  dumped in JSON mode; a result of exactly 256 KiB encoded is stored, one byte
  more is dead saying so.

The store is the memory store on a FakeClock, which the test alone moves; the
worker's pool is real threads, and every drain is bounded (`drained`).
"""

from __future__ import annotations

import logging
import random
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import BaseModel

from chalicelib import attempt_record
from chalicelib.clock import FakeClock
from chalicelib.errors import PermanentError, RetryAfter
from chalicelib.handlers import JobContext, Registry
from chalicelib.models import JobState
from chalicelib.retry import RetryPolicy
from chalicelib.storage.memory import MemoryStore
from chalicelib.worker import MAX_RESULT_BYTES, Worker, WorkerConfig
from tests.test_worker import add, get
from tests.test_worker_chaos import drained

WORKER_ERROR = "worker error: ArithmeticError: no delay today"


def run(store: MemoryStore, reg: Registry) -> None:
    worker = Worker(store, reg, WorkerConfig(concurrency=1), rng=random.Random(5))
    try:
        drained(worker)
    finally:
        worker.close()


class BrokenBackoff(RetryPolicy):
    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        raise ArithmeticError("no delay today")


# -- _failed: the fallback when no backoff can be worked out -----------------------


def test_a_failed_backoff_retries_at_once_with_the_worker_error_as_last_error(
    mem: MemoryStore, clock: FakeClock, reg: Registry, caplog: pytest.LogCaptureFixture
) -> None:
    seen: list[tuple[int, str | None]] = []

    @reg.handler("flaky", backoff=BrokenBackoff(max_attempts=3))
    def flaky(payload: dict[str, Any], ctx: JobContext) -> None:
        seen.append((ctx.job.attempts, ctx.job.last_error))  # what the last attempt left
        raise ValueError("upstream down")

    job = add(mem, clock, "flaky", max_attempts=3)
    with caplog.at_level(logging.ERROR, logger="spool.worker"):
        run(mem, reg)
    # The clock never moved: each retry was due at once, so one drain ran all three.
    assert seen == [(1, None), (2, WORKER_ERROR), (3, WORKER_ERROR)]
    done = get(mem, job.id)
    assert (done.state, done.attempts, done.last_error) == (
        JobState.DEAD,
        3,
        "ValueError: upstream down",
    )
    assert [a.next_delay for a in mem.attempts(job.id) or []] == [0.0, 0.0, None]
    logged = [r.getMessage() for r in caplog.records if r.name == "spool.worker"]
    assert f"could not work out when to retry {job.id}" in logged
    assert logged.count(f"could not work out when to retry {job.id}") == 2


class RecorderBug(BaseException):
    """A fault in Spool's own code while recording an attempt (not an Exception, so
    `_recorded`'s own guard lets it through to `_outcome`)."""


@pytest.fixture
def recording_fails_once(monkeypatch: pytest.MonkeyPatch) -> None:
    real = attempt_record.record
    calls = 0

    def record(completion: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RecorderBug("could not record")
        return real(completion, **kwargs)

    monkeypatch.setattr(attempt_record, "record", record)


@pytest.mark.usefixtures("recording_fails_once")
def test_a_job_without_a_handler_failing_inside_the_worker_on_its_last_attempt_is_dead(
    mem: MemoryStore, clock: FakeClock, reg: Registry
) -> None:
    job = add(mem, clock, "gone", max_attempts=1)
    run(mem, reg)
    dead = get(mem, job.id)
    # Written under the job's lease (a wrong token is refused: the job stays running).
    assert (dead.state, dead.attempts) == (JobState.DEAD, 1)
    assert dead.last_error == "worker error: RecorderBug: could not record"
    assert dead.lease_token is None
    [attempt] = mem.attempts(job.id) or []
    assert (attempt.outcome, attempt.error_type) == ("dead", "RecorderBug")


@pytest.mark.usefixtures("recording_fails_once")
def test_a_job_without_a_handler_failing_inside_the_worker_is_retried_at_once(
    mem: MemoryStore, clock: FakeClock, reg: Registry
) -> None:
    job = add(mem, clock, "gone", max_attempts=2)
    run(mem, reg)
    dead = get(mem, job.id)
    assert (dead.state, dead.attempts, dead.last_error) == (
        JobState.DEAD,
        2,
        "no handler for 'gone' in this worker: give it the module that registers 'gone' "
        "(SPOOL_HANDLERS), then redrive the job",
    )
    history = mem.attempts(job.id) or []
    assert [(a.outcome, a.next_delay) for a in history] == [("retrying", 0.0), ("dead", None)]


# -- execute: what a handler's exception leaves in the history ------------------------


@pytest.mark.parametrize(
    ("raised", "state", "error_type"),
    [
        (PermanentError("bad input"), JobState.DEAD, "PermanentError"),
        (RetryAfter(42.0, "throttled"), JobState.RETRYING, "RetryAfter"),
        (ValueError("upstream down"), JobState.RETRYING, "ValueError"),
    ],
    ids=["permanent", "retry-after", "other"],
)
def test_a_handlers_exception_is_in_the_attempts_history_with_type_and_traceback(
    mem: MemoryStore,
    clock: FakeClock,
    reg: Registry,
    raised: Exception,
    state: JobState,
    error_type: str,
) -> None:
    @reg.handler("fails", max_attempts=3, backoff=(10.0, 10.0))
    def fails(payload: dict[str, Any]) -> None:
        raise raised

    job = add(mem, clock, "fails", max_attempts=3)
    run(mem, reg)
    assert get(mem, job.id).state is state
    [attempt] = mem.attempts(job.id) or []
    assert attempt.error_type == error_type
    assert attempt.traceback is not None and "raise raised" in attempt.traceback


class Count(BaseModel):
    n: int


def test_a_payload_the_handler_cannot_read_is_dead_with_the_validation_error_in_history(
    mem: MemoryStore, clock: FakeClock, reg: Registry
) -> None:
    reg.handler("typed", payload=Count, max_attempts=3)(lambda payload: payload.n)
    job = add(mem, clock, "typed", payload={"n": "not a number"}, max_attempts=3)
    run(mem, reg)
    dead = get(mem, job.id)
    assert (dead.state, dead.attempts) == (JobState.DEAD, 1)
    assert (dead.last_error or "").startswith(
        "invalid payload: the 'typed' handler's model does not take the stored payload (payload.n: "
    )
    [attempt] = mem.attempts(job.id) or []
    assert (attempt.outcome, attempt.error_type) == ("dead", "ValidationError")
    assert attempt.traceback is not None and "ValidationError" in attempt.traceback


def test_a_retry_after_is_the_next_delay_exactly(
    mem: MemoryStore, clock: FakeClock, reg: Registry
) -> None:
    @reg.handler("throttled", max_attempts=2, backoff=(1.0, 1.0))
    def throttled(payload: dict[str, Any]) -> None:
        raise RetryAfter(42.0)

    job = add(mem, clock, "throttled", max_attempts=2)
    run(mem, reg)
    waiting = get(mem, job.id)
    assert (waiting.state, waiting.run_at) == (
        JobState.RETRYING,
        clock.now() + timedelta(seconds=42),
    )
    [attempt] = mem.attempts(job.id) or []
    assert attempt.next_delay == 42.0


# -- execute: results ----------------------------------------------------------------


@pytest.mark.parametrize("value", [True, False], ids=["true", "false"])
def test_a_boolean_result_is_stored_as_it_is(
    mem: MemoryStore, clock: FakeClock, reg: Registry, value: bool
) -> None:
    reg.handler("answer")(lambda payload: value)
    job = add(mem, clock, "answer")
    run(mem, reg)
    done = get(mem, job.id)
    assert done.state is JobState.SUCCEEDED and done.result is value


class Receipt(BaseModel):
    at: datetime
    id: uuid.UUID


def test_a_pydantic_result_is_dumped_as_json(
    mem: MemoryStore, clock: FakeClock, reg: Registry
) -> None:
    at = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    reg.handler("receipt")(lambda payload: Receipt(at=at, id=uuid.UUID(int=1)))
    job = add(mem, clock, "receipt")
    run(mem, reg)
    done = get(mem, job.id)
    assert done.state is JobState.SUCCEEDED, done.last_error
    assert done.result == {
        "at": "2026-01-02T03:04:05Z",
        "id": "00000000-0000-0000-0000-000000000001",
    }


@pytest.mark.parametrize("extra", [0, 1], ids=["at-the-limit", "one-byte-over"])
def test_a_result_may_be_256_kib_encoded_and_not_a_byte_more(
    mem: MemoryStore, clock: FakeClock, reg: Registry, extra: int
) -> None:
    text = "x" * (MAX_RESULT_BYTES - 2 + extra)  # its quotes make the rest
    reg.handler("big", max_attempts=3)(lambda payload: text)
    job = add(mem, clock, "big", max_attempts=3)
    run(mem, reg)
    done = get(mem, job.id)
    if extra == 0:
        assert (done.state, done.result) == (JobState.SUCCEEDED, text)
    else:
        assert (done.state, done.attempts, done.result) == (JobState.DEAD, 1, None)
        assert done.last_error == f"result is {MAX_RESULT_BYTES + 1} bytes, over {MAX_RESULT_BYTES}"

"""Near the Lambda deadline the SQS worker defers only jobs it could still run: a
message naming a job that is already finished (succeeded, dead, cancelled), not due
yet, or held by another worker's lease is redundant whatever the time left, and is acknowledged
as it is with time to spare. Deferring it reported the message failed and handed it
straight back, a receive counted toward the queue's maxReceiveCount for a job that
will never run again. Against DynamoDB, SQS and S3 in moto, as tests/test_aws_events.py."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from moto import mock_aws

import app as spool_app
from chalicelib.clock import FakeClock
from chalicelib.models import JobState
from chalicelib.runtime import Runtime
from local.emulator import context
from tests.apikit import TENANT_A
from tests.factories import stored
from tests.test_aws_events import count_calls, enqueue, open_runtime, store_of

NEAR_MS = 50  # less than any handler's timeout: every waiting job is deferred


@pytest.fixture
def rt(tmp_path: Path) -> Iterator[Runtime]:
    with mock_aws(), open_runtime(tmp_path) as runtime:
        yield runtime


def sent_again(rt: Runtime) -> list[str]:
    """The job ids the store's dispatch sends from now on for delivery at once (a
    deferred job goes back to the queue as a new message: tests/test_sqs_deferrals.py;
    an early message's job is sent again for when it is due, which is not this)."""
    dispatch = store_of(rt).dispatch
    assert dispatch is not None
    sent: list[str] = []
    # send_held: every send goes through it (send too), a deferral's with its holds.
    real = dispatch.send_held

    def send_held(items: Any) -> list[str]:
        sent.extend(job_id for job_id, delay, _ in items if delay == 0)
        return real(items)

    dispatch.send_held = send_held  # type: ignore[method-assign]
    return sent


def run_jobs(ids: list[str], timeout_ms: int = 900_000) -> set[str]:
    """The message ids the SQS handler reports failed (message m-i names ids[i])."""
    event = {
        "Records": [
            {"messageId": f"m-{i}", "receiptHandle": f"rh-{i}", "body": job_id}
            for i, job_id in enumerate(ids)
        ]
    }
    answer: dict[str, Any] = spool_app.app.handler_map["run_jobs"](
        event, context("run_jobs", timeout_ms)
    )
    return {f["itemIdentifier"] for f in answer["batchItemFailures"]}


def test_near_the_deadline_redundant_messages_are_acknowledged_and_waiting_jobs_deferred(
    rt: Runtime,
) -> None:
    done = enqueue(rt)
    dead = enqueue(rt, type_="fail", payload={"always": True}, max_attempts=1)
    assert run_jobs([done, dead]) == set()
    cancelled = enqueue(rt)
    rt.service.cancel(cancelled, TENANT_A)
    running = enqueue(rt)
    [claimed] = rt.store.claim(1, 300.0, ids=[running])
    later = enqueue(rt, delay=600)  # not due: its own delayed message brings it
    waiting = enqueue(rt)
    states = {j: stored(rt.store, j).state for j in (done, dead, cancelled, running)}
    assert list(states.values()) == [
        JobState.SUCCEEDED,
        JobState.DEAD,
        JobState.CANCELLED,
        JobState.RUNNING,
    ]

    resent = sent_again(rt)
    failed = run_jobs([done, dead, cancelled, running, later, waiting], NEAR_MS)

    # Every message acknowledged; only the waiting job goes back (a new message), for a
    # later invocation.
    assert failed == set() and resent == [waiting]
    job = rt.store.get(waiting)
    assert job is not None and job.state is JobState.QUEUED and job.attempts == 0
    still = rt.store.get(running)
    assert still is not None and still.lease_token == claimed.lease_token


def test_near_the_deadline_a_job_whose_lease_lapsed_is_deferred_not_run(tmp_path: Path) -> None:
    """A running job whose lease has expired is one a claim would take (and run):
    near the deadline it is deferred like a waiting job, with no attempt spent."""
    clock = FakeClock()
    with mock_aws(), open_runtime(tmp_path, clock=clock) as rt:
        lapsed = enqueue(rt)
        [first] = rt.store.claim(1, 30.0, ids=[lapsed])
        clock.advance(31)
        resent = sent_again(rt)
        assert run_jobs([lapsed], NEAR_MS) == set() and resent == [lapsed]
        job = rt.store.get(lapsed)
        assert job is not None and job.attempts == 1 and job.lease_token == first.lease_token


BIG = "x" * (120 * 1024)  # over the store's offload_bytes (100 KiB): kept in S3


def test_the_deadline_check_reads_no_payload_or_result_from_s3(rt: Runtime) -> None:
    """Whether there is time to run a job depends on its type and state alone: near
    the deadline, the check reads neither a payload nor a result kept in S3 (it did:
    one GetObject per payload and per result, for a job it then did not run)."""
    done = enqueue(rt, payload={"blob": BIG})  # echo: its result is the payload, in S3 too
    assert run_jobs([done]) == set()
    waiting = enqueue(rt, payload={"blob": BIG})
    store = store_of(rt)
    assert store.blobs is not None
    s3_calls = count_calls(store.blobs.client)
    ddb_calls = count_calls(store.ddb)

    resent = sent_again(rt)
    failed = run_jobs([done, waiting], NEAR_MS)

    assert failed == set() and resent == [waiting]  # the waiting one deferred, sent again
    assert s3_calls["GetObject"] == 0, s3_calls
    # One read of both jobs' timings for the check, one of the skipped one's afterwards
    # (is it gone? chalicelib/events.py _log_dropped), never a GetItem of a whole job.
    assert ddb_calls["GetItem"] == 0 and ddb_calls["BatchGetItem"] == 2, ddb_calls
    job = rt.store.get(waiting)
    assert job is not None and job.state is JobState.QUEUED and job.attempts == 0
    assert job.payload == {"blob": BIG}

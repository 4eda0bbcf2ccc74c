"""Chaos on the SQS worker (s58, helper D2): a job a limit held back N times whose
message then arrives too close to the Lambda deadline is deferred, sent again at once
as a new message (chalicelib/events.py). That message was the bare id, so the job's
count of holds went back to 0 and its next hold waited HELD_REDELIVERY_SECONDS again
instead of doubling toward CONCURRENCY_HOLD_CAP (events.held_delay). Found against
moto_server (a message {"id": J, "holds": 3} deferred came back as "J"); reproduced
here against moto in process."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

import app as spool_app
from chalicelib import events
from chalicelib.runtime import Runtime
from chalicelib.storage.dynamodb import DynamoStore
from chalicelib.storage.sqs_dispatch import body_for
from local.emulator import context, sqs_event
from tests.sqs_chaos_kit import enqueue, failed, moto_runtime

pytestmark = [pytest.mark.aws, pytest.mark.timeout(60)]


@pytest.fixture
def rt(tmp_path: Path) -> Iterator[Runtime]:
    with moto_runtime(tmp_path) as runtime:
        yield runtime


def bodies_on_the_queue(rt: Runtime) -> list[str]:
    """Every message on the jobs queue (each received and deleted)."""
    assert isinstance(rt.store, DynamoStore) and rt.store.dispatch is not None
    dispatch = rt.store.dispatch
    found: list[str] = []
    while True:
        got = dispatch.client.receive_message(QueueUrl=dispatch.queue_url, MaxNumberOfMessages=10)
        messages = got.get("Messages", [])
        if not messages:
            return found
        for message in messages:
            found.append(message["Body"])
            dispatch.client.delete_message(
                QueueUrl=dispatch.queue_url, ReceiptHandle=message["ReceiptHandle"]
            )


@pytest.mark.parametrize("holds", [0, 1, 3, 40])
def test_a_deferred_job_keeps_its_count_of_holds(rt: Runtime, holds: int) -> None:
    job_id = enqueue(rt, "sleep", payload={"seconds": 0.1})  # a 60 s handler timeout
    bodies_on_the_queue(rt)  # the enqueue's own message
    event = sqs_event(spool_app.app, [job_id])
    # As sqs_dispatch.body_for writes it: the bare id for a job never held.
    event["Records"][0]["body"] = body_for(job_id, holds)
    answer = events.handle_sqs(event, context("w", timeout_ms=3000))  # no time for it
    assert failed(answer) == []
    [body] = bodies_on_the_queue(rt)
    assert events.read_message(body) == events.ParsedMessage(job_id, "", holds)
    job = rt.store.get(job_id)
    assert job is not None and job.attempts == 0


def test_duplicates_of_a_deferred_job_go_back_once_with_the_most_holds(rt: Runtime) -> None:
    job_id = enqueue(rt, "sleep", payload={"seconds": 0.1})
    bodies_on_the_queue(rt)
    event = sqs_event(spool_app.app, [job_id, job_id])
    event["Records"][1]["body"] = f'{{"id": "{job_id}", "holds": 5}}'
    assert failed(events.handle_sqs(event, context("w", timeout_ms=3000))) == []
    [body] = bodies_on_the_queue(rt)
    assert events.read_message(body) == events.ParsedMessage(job_id, "", 5)

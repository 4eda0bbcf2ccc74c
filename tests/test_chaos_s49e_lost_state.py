"""Chaos on the SQS worker when the AWS state is lost under it (s49, helper E), as a
restarted moto_server loses it: the table gone, or the queue gone. The handler
answers (no exception for Lambda to retry the whole batch blindly) and names the
messages to deliver again."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

import app as spool_app
from chalicelib import events
from chalicelib.runtime import Runtime
from chalicelib.storage.dynamodb import DynamoStore
from local.emulator import context, sqs_event
from tests.sqs_chaos_kit import enqueue, failed, moto_runtime

pytestmark = [pytest.mark.aws, pytest.mark.timeout(60)]


@pytest.fixture
def rt(tmp_path: Path) -> Iterator[Runtime]:
    with moto_runtime(tmp_path) as runtime:
        yield runtime


def test_a_lost_table_hands_the_whole_batch_back(rt: Runtime) -> None:
    assert isinstance(rt.store, DynamoStore)
    ids = [enqueue(rt, payload={"i": i}) for i in range(3)]
    rt.store.ddb.delete_table(TableName="jobs")
    event = sqs_event(spool_app.app, ids)
    answer = events.handle_sqs(event, context("w"))
    assert sorted(failed(answer)) == sorted(r["messageId"] for r in event["Records"])


def test_a_lost_queue_hands_deferred_messages_back(rt: Runtime) -> None:
    assert isinstance(rt.store, DynamoStore) and rt.store.dispatch is not None
    ids = [enqueue(rt, "sleep", payload={"seconds": 0}) for _ in range(2)]
    rt.store.dispatch.client.delete_queue(QueueUrl=rt.store.dispatch.queue_url)
    event = sqs_event(spool_app.app, ids)
    answer = events.handle_sqs(event, context("w", timeout_ms=3000))  # no time for `sleep`
    assert sorted(failed(answer)) == sorted(r["messageId"] for r in event["Records"])
    for job_id in ids:
        job = rt.store.get(job_id)
        assert job is not None and job.attempts == 0


def test_a_lost_queue_still_runs_the_batch(rt: Runtime) -> None:
    assert isinstance(rt.store, DynamoStore) and rt.store.dispatch is not None
    ids = [enqueue(rt, payload={"i": i}) for i in range(2)]
    rt.store.dispatch.client.delete_queue(QueueUrl=rt.store.dispatch.queue_url)
    event = sqs_event(spool_app.app, ids)
    assert failed(events.handle_sqs(event, context("w"))) == []
    for job_id in ids:
        job = rt.store.get(job_id)
        assert job is not None and job.attempts == 1 and job.state.value == "succeeded"

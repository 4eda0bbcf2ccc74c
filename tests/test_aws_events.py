"""The serverless worker on the AWS store: app.py's SQS handler fed by the local
poller (local/sqs_poller.py) exactly as Lambda's event source mapping would,
against DynamoDB, SQS and S3 in moto."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from chalice.test import Client
from moto import mock_aws

import app as spool_app
from chalicelib import events
from chalicelib.clock import FakeClock
from chalicelib.models import JobState
from chalicelib.runtime import Runtime
from chalicelib.service import EnqueueRequest
from chalicelib.storage.dynamodb import DynamoStore
from chalicelib.worker import Worker
from local.emulator import context, scheduled_event
from local.sqs_poller import SqsPoller, failed_ids
from tests.apikit import TENANT_A, installed, settings_for

QUEUE = "jobs"


def store_of(rt: Runtime) -> DynamoStore:
    assert isinstance(rt.store, DynamoStore) and rt.store.dispatch is not None
    return rt.store


def open_runtime(
    tmp_path: Path, visibility: int = 30, clock: FakeClock | None = None, concurrency: int = 4
) -> Any:
    settings = settings_for(
        tmp_path,
        store_url=f"dynamodb://jobs?queue={QUEUE}&bucket=jobs-bucket&create=1",
        concurrency=concurrency,
        extra={"SPOOL_SQS_VISIBILITY_TIMEOUT": str(visibility)},
    )
    return installed(settings, clock)


@pytest.fixture
def rt(tmp_path: Path) -> Iterator[Runtime]:
    with mock_aws(), open_runtime(tmp_path) as runtime:
        yield runtime


def enqueue(rt: Runtime, type_: str = "echo", **fields: Any) -> str:
    request = EnqueueRequest.model_validate({"type": type_, **fields})
    return rt.service.enqueue([request], TENANT_A)[0].job.id


def poller(rt: Runtime, timeout_ms: int = 900_000) -> SqsPoller:
    dispatch = store_of(rt).dispatch
    assert dispatch is not None
    return SqsPoller(
        spool_app.app, dispatch.client, dispatch.queue_url, wait_seconds=0, timeout_ms=timeout_ms
    )


def state(rt: Runtime, job_id: str) -> JobState:
    job = rt.store.get(job_id)
    assert job is not None
    return job.state


def visible(rt: Runtime) -> int:
    dispatch = store_of(rt).dispatch
    assert dispatch is not None
    attrs = dispatch.client.get_queue_attributes(
        QueueUrl=dispatch.queue_url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesDelayed"],
    )["Attributes"]
    return int(attrs["ApproximateNumberOfMessages"])


def count_calls(client: Any) -> Counter[str]:
    calls: Counter[str] = Counter()
    client.meta.events.register(
        "before-call.*.*", lambda model, **_: calls.__setitem__(model.name, calls[model.name] + 1)
    )
    return calls


# -- Lambda's reading of a partial-batch response ----------------------------------------


@pytest.mark.parametrize(
    ("response", "failed"),
    [
        (None, set()),
        ({}, set()),
        ({"batchItemFailures": []}, set()),
        ({"batchItemFailures": [{"itemIdentifier": "b"}]}, {"b"}),
        ({"batchItemFailures": [{"itemIdentifier": ""}]}, {"a", "b"}),
        ({"batchItemFailures": [{"itemIdentifier": "zzz"}]}, {"a", "b"}),
        ({"batchItemFailures": "oops"}, {"a", "b"}),
    ],
)
def test_partial_batch_responses_are_read_as_lambda_reads_them(
    response: Any, failed: set[str]
) -> None:
    assert failed_ids(response, ["a", "b"]) == failed


def test_poller_records_have_the_shape_lambda_and_chalice_use(rt: Runtime) -> None:
    enqueue(rt)
    p = poller(rt)
    got = p.sqs.receive_message(QueueUrl=p.queue_url, MessageSystemAttributeNames=["All"])
    record = p.record(got["Messages"][0])
    reference = Client(spool_app.app).events.generate_sqs_event(["x"], queue_name=QUEUE)
    assert set(record) == set(reference["Records"][0])
    assert record["eventSourceARN"].endswith(f":{QUEUE}")
    assert set(record["attributes"]) >= {"ApproximateReceiveCount", "SentTimestamp"}


# -- the SQS path -------------------------------------------------------------------------


def test_messages_run_their_jobs_and_are_deleted(rt: Runtime) -> None:
    ids = [enqueue(rt, payload={"i": i}) for i in range(3)]
    result = poller(rt).poll_once()
    assert (result.received, result.deleted, result.failed) == (3, 3, 0)
    assert [state(rt, i) for i in ids] == [JobState.SUCCEEDED] * 3
    assert visible(rt) == 0
    assert poller(rt).poll_once().received == 0


def test_a_duplicate_delivery_is_dropped_not_run_again(rt: Runtime) -> None:
    job_id = enqueue(rt)
    dispatch = store_of(rt).dispatch
    assert dispatch is not None
    dispatch.send([(job_id, 0)])  # SQS delivers at least once: here, twice
    p = poller(rt)
    first = p.poll_once()
    second = p.poll_once()
    assert first.deleted + second.deleted == 2 and first.failed == second.failed == 0
    job = rt.store.get(job_id)
    assert job is not None and job.state is JobState.SUCCEEDED and job.attempts == 1


def test_deferred_jobs_go_back_at_once_as_new_messages(rt: Runtime) -> None:
    ids = {enqueue(rt) for _ in range(2)}
    rushed = poller(rt, timeout_ms=50).poll_once()  # too little time left for any job
    # Acknowledged, and sent again: a receive that counts toward maxReceiveCount for a
    # job nothing is wrong with would not be (tests/test_sqs_deferrals.py).
    assert (rushed.received, rushed.deleted, rushed.failed) == (2, 2, 0)
    assert all(state(rt, i) is JobState.QUEUED for i in ids)
    assert visible(rt) == 2  # not hidden for the visibility timeout
    calm = poller(rt).poll_once()
    assert calm.deleted == 2 and all(state(rt, i) is JobState.SUCCEEDED for i in ids)


def test_a_message_naming_no_job_stays_on_the_queue(rt: Runtime) -> None:
    dispatch = store_of(rt).dispatch
    assert dispatch is not None
    dispatch.client.send_message(QueueUrl=dispatch.queue_url, MessageBody="{}")
    result = poller(rt).poll_once()
    assert (result.received, result.deleted, result.failed) == (1, 0, 1)


def test_when_the_handler_raises_nothing_is_deleted(
    rt: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    enqueue(rt)

    def broken(event: Any, context: Any) -> Any:
        raise RuntimeError("the function crashed")

    monkeypatch.setattr(events, "handle_sqs", broken)
    result = poller(rt).poll_once()
    assert result.crashed and result.deleted == 0 and result.failed == 1


def test_a_batch_is_claimed_in_waves_no_bigger_than_the_pool(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    waves: list[int] = []
    real = Worker.process

    def spy(
        self: Worker, job_ids: Any, deadline: float | None = None, *rest: Any
    ) -> dict[str, str]:
        waves.append(len(job_ids))
        return real(self, job_ids, deadline, *rest)

    monkeypatch.setattr(Worker, "process", spy)
    with mock_aws(), open_runtime(tmp_path, concurrency=2) as rt:
        ids = [enqueue(rt) for _ in range(5)]
        result = poller(rt).poll_once()
        assert result.deleted == 5
        assert waves == [2, 2, 1]
        assert all(state(rt, i) is JobState.SUCCEEDED for i in ids)


@pytest.mark.timeout(60)
def test_a_long_job_keeps_its_message_hidden_while_it_runs(tmp_path: Path) -> None:
    with mock_aws(), open_runtime(tmp_path, visibility=2) as rt:
        dispatch = store_of(rt).dispatch
        assert dispatch is not None
        url = dispatch.queue_url
        dispatch.client.set_queue_attributes(QueueUrl=url, Attributes={"VisibilityTimeout": "2"})
        calls = count_calls(dispatch.client)
        job_id = enqueue(rt, "sleep", payload={"seconds": 3.5})
        results: list[Any] = []
        worker = threading.Thread(target=lambda: results.append(poller(rt).poll_once()))
        worker.start()
        deadline = time.monotonic() + 20
        while state(rt, job_id) is not JobState.RUNNING and time.monotonic() < deadline:
            time.sleep(0.05)  # the poller has received the message and started the job
        seen_again = 0
        while worker.is_alive() and time.monotonic() < deadline:
            again = dispatch.client.receive_message(QueueUrl=url, WaitTimeSeconds=0)
            seen_again += len(again.get("Messages", []))
            time.sleep(0.25)
        worker.join(30)
        assert seen_again == 0, "the message reappeared while its job was running"
        assert calls["ChangeMessageVisibilityBatch"] >= 1
        assert results[0].deleted == 1 and state(rt, job_id) is JobState.SUCCEEDED


# -- the scheduled function -----------------------------------------------------------------


def test_the_schedule_releases_due_jobs_to_sqs_instead_of_draining(tmp_path: Path) -> None:
    clock = FakeClock(datetime.now(UTC))
    with mock_aws(), open_runtime(tmp_path, clock=clock) as rt:
        handler = spool_app.app.handler_map["drain_due"]
        event = scheduled_event(spool_app.app)
        far = enqueue(rt, delay=1000)  # beyond SQS's 15-minute delay: no message yet
        now_job = enqueue(rt)
        dispatch = store_of(rt).dispatch
        assert dispatch is not None
        dispatch.client.purge_queue(QueueUrl=dispatch.queue_url)  # now_job's message is lost
        assert handler(event, context("drain_due")) == {"released": 0, "periodic_enqueued": 0}
        assert state(rt, now_job) is JobState.QUEUED  # not run here: SQS delivers

        clock.advance(store_of(rt).config.lost_after + 1)  # far is within 15 minutes now
        assert handler(event, context("drain_due")) == {"released": 2, "periodic_enqueued": 0}
        attrs = dispatch.client.get_queue_attributes(
            QueueUrl=dispatch.queue_url, AttributeNames=["All"]
        )["Attributes"]
        assert attrs["ApproximateNumberOfMessages"] == "1"  # now_job, at once
        assert attrs["ApproximateNumberOfMessagesDelayed"] == "1"  # far, when due
        assert state(rt, far) is JobState.QUEUED


def test_a_batch_whose_claim_is_throttled_part_way_runs_every_job_once(rt: Runtime) -> None:
    """DynamoDB throttles the claim of the second job of a batch, after the first was
    claimed: the first still runs in this invocation (it was left `running`, unrun,
    its attempt spent by the reaper) and the second, whose message the batch
    acknowledges, runs from the id the store sent again; one attempt each."""
    from botocore.exceptions import ClientError

    first, second = enqueue(rt), enqueue(rt)
    throttled: list[str] = []

    def throttle(params: dict[str, Any], **_: Any) -> None:
        if "ConditionExpression" in params and second in str(params.get("Key")) and not throttled:
            throttled.append(second)
            code = "ProvisionedThroughputExceededException"
            raise ClientError({"Error": {"Code": code, "Message": "slow down"}}, "UpdateItem")

    store_of(rt).ddb.meta.events.register("before-parameter-build.dynamodb.UpdateItem", throttle)
    p = poller(rt)
    batch = p.poll_once()
    assert throttled and (batch.received, batch.deleted, batch.failed) == (2, 2, 0)
    assert state(rt, first) is JobState.SUCCEEDED
    again = p.poll_once()  # the second job's id, sent again by the store
    assert again.received == 1 and state(rt, second) is JobState.SUCCEEDED
    for job_id in (first, second):
        job = rt.store.get(job_id)
        assert job is not None and job.attempts == 1

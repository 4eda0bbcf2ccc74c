"""A limit on the SQS path: app.py's SQS handler, fed by the local poller as Lambda
would feed it, against DynamoDB and SQS in moto. A held job's message goes back
to the queue as a new, delayed message; the job keeps its attempts."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from moto import mock_aws

from chalicelib import events
from chalicelib.models import JobState
from chalicelib.runtime import Runtime
from tests.apikit import installed, settings_for
from tests.factories import stored
from tests.test_aws_events import QUEUE, enqueue, poller, state, store_of, visible


@pytest.fixture
def rt(tmp_path: Path) -> Iterator[Runtime]:
    settings = settings_for(
        tmp_path,
        store_url=f"dynamodb://jobs?queue={QUEUE}&bucket=jobs-bucket&create=1",
        extra={"SPOOL_LIMITS": json.dumps({"type:echo": {"concurrency": 1}})},
    )
    with mock_aws(), installed(settings) as runtime:
        yield runtime


def delayed(rt: Runtime) -> int:
    dispatch = store_of(rt).dispatch
    assert dispatch is not None
    attrs = dispatch.client.get_queue_attributes(
        QueueUrl=dispatch.queue_url, AttributeNames=["ApproximateNumberOfMessagesDelayed"]
    )["Attributes"]
    return int(attrs["ApproximateNumberOfMessagesDelayed"])


def test_held_messages_come_back_delayed_without_spending_attempts(rt: Runtime) -> None:
    ids = [enqueue(rt, payload={"i": i}) for i in range(3)]
    first = poller(rt).poll_once()
    # Every message was handled: one job ran, two went back as new delayed messages
    # (so holds never count toward the queue's maxReceiveCount).
    assert (first.received, first.deleted, first.failed) == (3, 3, 0)
    states = sorted(state(rt, i).value for i in ids)
    assert states == ["queued", "queued", "succeeded"]
    held = [i for i in ids if state(rt, i) is JobState.QUEUED]
    assert all(stored(rt.store, i).attempts == 0 for i in held)
    assert delayed(rt) == 2
    time.sleep(events.HELD_REDELIVERY_SECONDS + 0.5)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and any(state(rt, i) is JobState.QUEUED for i in ids):
        poller(rt).poll_once()
        time.sleep(0.2)
    assert all(state(rt, i) is JobState.SUCCEEDED for i in ids)


@pytest.mark.timeout(60)
def test_a_held_job_is_sent_back_while_its_batch_mates_still_run(rt: Runtime) -> None:
    """The held job's new message goes out when the claim holds it, not once the rest of
    its batch has finished: it must not wait behind a long job of the same batch."""
    long_job = enqueue(rt, "sleep", payload={"seconds": 6})
    ids = [enqueue(rt, payload={"i": i}) for i in range(2)]  # one runs, one is held
    results: list[Any] = []
    batch = threading.Thread(target=lambda: results.append(poller(rt).poll_once()))
    batch.start()
    deadline = time.monotonic() + 20
    while state(rt, long_job) is not JobState.RUNNING and time.monotonic() < deadline:
        time.sleep(0.05)
    resent = 0
    while state(rt, long_job) is JobState.RUNNING and time.monotonic() < deadline:
        resent = visible(rt) + delayed(rt)
        if resent:
            break
        time.sleep(0.1)
    running_then = state(rt, long_job) is JobState.RUNNING
    batch.join(30)
    assert resent == 1 and running_then, "the held job's message waited for the long job"
    assert results[0].received == 3 and results[0].failed == 0
    held = [i for i in ids if state(rt, i) is JobState.QUEUED]
    assert len(held) == 1 and stored(rt.store, held[0]).attempts == 0


def test_a_throttled_read_after_a_limited_claim_does_not_strand_its_jobs(rt: Runtime) -> None:
    """A claim under a limit wrote its jobs `running` in one transaction, then read them
    back. DynamoDB throttling that read once raised out of the claim: the job sat
    `running`, its attempt spent and its handler never run, its message redelivered
    only to be dropped as leased, until the reaper spent the attempt. Found driving
    run_jobs on moto_server with a fault-injecting botocore hook. Since stop 42 the
    claim reads its jobs before its transaction and nothing after it: every read that
    follows the claim's transaction is throttled here, and the job still runs."""
    from botocore.exceptions import ClientError

    job_id = enqueue(rt)
    ops: list[str] = []

    def throttle(model: Any, **_: Any) -> None:
        claimed = ops.count("TransactWriteItems") == 1  # after the claim, before the finish
        ops.append(model.name)
        if claimed and model.name in ("BatchGetItem", "GetItem", "Query"):
            code = "ProvisionedThroughputExceededException"
            raise ClientError({"Error": {"Code": code, "Message": "slow"}}, model.name)

    store_of(rt).ddb.meta.events.register("before-call.dynamodb.*", throttle)
    batch = poller(rt).poll_once()
    assert ops.count("TransactWriteItems") >= 1  # the claim was one transaction
    assert (batch.received, batch.deleted, batch.failed) == (1, 1, 0)
    job = rt.store.get(job_id)
    assert job is not None and job.state is JobState.SUCCEEDED and job.attempts == 1

"""A limit on the SQS path: app.py's SQS handler, fed by the local poller as Lambda
would feed it, against DynamoDB and SQS in moto. A held job's message goes back
to the queue as a new, delayed message; the job keeps its attempts."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from moto import mock_aws

from chalicelib import events
from chalicelib.models import JobState
from chalicelib.runtime import Runtime
from tests.apikit import installed, settings_for
from tests.test_aws_events import QUEUE, enqueue, poller, state, store_of


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
    assert all(rt.store.get(i).attempts == 0 for i in held)  # type: ignore[union-attr]
    assert delayed(rt) == 2
    time.sleep(events.HELD_REDELIVERY_SECONDS + 0.5)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and any(state(rt, i) is JobState.QUEUED for i in ids):
        poller(rt).poll_once()
        time.sleep(0.2)
    assert all(state(rt, i) is JobState.SUCCEEDED for i in ids)

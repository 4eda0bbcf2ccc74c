"""A job a limit held back on the SQS path goes back to the queue when it is held, not once
the rest of its batch has finished: a held job's new message must not wait behind a long
job that happened to arrive in the same batch."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from moto import mock_aws

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


def waiting_messages(rt: Runtime) -> int:
    dispatch = store_of(rt).dispatch
    assert dispatch is not None
    attrs = dispatch.client.get_queue_attributes(
        QueueUrl=dispatch.queue_url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesDelayed"],
    )["Attributes"]
    return int(attrs["ApproximateNumberOfMessages"]) + int(
        attrs["ApproximateNumberOfMessagesDelayed"]
    )


@pytest.mark.timeout(60)
def test_a_held_job_is_sent_back_while_its_batch_mates_still_run(rt: Runtime) -> None:
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
        resent = waiting_messages(rt)
        if resent:
            break
        time.sleep(0.1)
    running_then = state(rt, long_job) is JobState.RUNNING
    batch.join(30)
    assert resent == 1 and running_then, "the held job's message waited for the long job"
    assert results[0].received == 3 and results[0].failed == 0
    held = [i for i in ids if state(rt, i) is JobState.QUEUED]
    assert len(held) == 1 and rt.store.get(held[0]).attempts == 0  # type: ignore[union-attr]

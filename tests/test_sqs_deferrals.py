"""A job deferred for want of time does not count toward the queue's maxReceiveCount.

The SQS worker defers a job whose handler timeout no longer fits before the
invocation's deadline (a late wave of a batch bigger than its pool, behind long
jobs). It handed the job's message back with its visibility set to 0: the same
message, received once more, so a job deferred MAX_RECEIVE_COUNT times went to the
SQS dead-letter queue, raising its alarm for a job nothing was wrong with, and
waited there for the scheduled release's lost-message sweep (ten minutes and
more). A deferred job now goes back as a new message (as a held one does) and its
old message is acknowledged; only when that send fails is the old one reported
failed and handed back, as before.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from moto import mock_aws

from chalicelib.models import JobState
from chalicelib.runtime import Runtime
from chalicelib.storage.dynamodb_aws import MAX_RECEIVE_COUNT
from tests.apikit import installed, settings_for
from tests.factories import stored
from tests.test_aws_events import QUEUE, enqueue, poller, state, store_of, visible


@pytest.fixture
def rt(tmp_path: Path) -> Iterator[Runtime]:
    settings = settings_for(
        tmp_path, store_url=f"dynamodb://jobs?queue={QUEUE}&bucket=jobs-bucket&create=1"
    )
    with mock_aws(), installed(settings) as runtime:
        yield runtime


def dead_letters(rt: Runtime) -> int:
    dispatch = store_of(rt).dispatch
    assert dispatch is not None
    url = dispatch.client.get_queue_url(QueueName=QUEUE + "-dlq")["QueueUrl"]
    attrs = dispatch.client.get_queue_attributes(
        QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"]
    )["Attributes"]
    return int(attrs["ApproximateNumberOfMessages"])


def test_a_job_deferred_again_and_again_never_reaches_the_dead_letter_queue(
    rt: Runtime,
) -> None:
    job_id = enqueue(rt)
    for _ in range(MAX_RECEIVE_COUNT + 2):
        rushed = poller(rt, timeout_ms=50).poll_once()  # too little time left for it
        assert rushed.received == 1
        assert state(rt, job_id) is JobState.QUEUED
        assert visible(rt) == 1  # back at once, not after the visibility timeout
    assert dead_letters(rt) == 0
    assert stored(rt.store, job_id).attempts == 0
    calm = poller(rt).poll_once()
    assert calm.deleted == 1 and state(rt, job_id) is JobState.SUCCEEDED


def test_a_deferred_job_whose_new_message_cannot_be_sent_keeps_its_old_one(
    rt: Runtime,
) -> None:
    """The send that replaces the message fails (SQS refuses it): the old message is
    reported failed and handed back at once, so the job is not left without one."""
    job_id = enqueue(rt)
    dispatch = store_of(rt).dispatch
    assert dispatch is not None
    # send_held: every send goes through it (send too), a deferral's with its holds.
    real = dispatch.send_held
    dispatch.send_held = lambda items: [job_id for job_id, _, _ in items]  # type: ignore[method-assign]
    try:
        rushed = poller(rt, timeout_ms=50).poll_once()
    finally:
        dispatch.send_held = real  # type: ignore[method-assign]
    assert (rushed.received, rushed.deleted, rushed.failed) == (1, 0, 1)
    assert visible(rt) == 1
    assert poller(rt).poll_once().deleted == 1 and state(rt, job_id) is JobState.SUCCEEDED

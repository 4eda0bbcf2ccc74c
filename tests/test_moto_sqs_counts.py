"""tests/moto_sqs_counts.py: a queue's approximate counts are moto's own, at one instant.

The patch reads the clock once per count instead of twice per message; these tests
hold it to what moto's Message.visible and Message.delayed count, on a queue with
messages ready, in flight and delayed, and at instants on either side of a message's
visibility timeout and delay running out.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests import moto_sqs_counts

REGION = "us-east-1"


@pytest.fixture
def queue(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Any, str, Any]]:
    """A queue holding 3 ready, 2 in-flight and 2 delayed messages, and moto's Queue."""
    import boto3
    from moto import mock_aws
    from moto.core.models import DEFAULT_ACCOUNT_ID
    from moto.sqs.models import sqs_backends

    moto_sqs_counts.install()
    with mock_aws():
        client = boto3.client("sqs", region_name=REGION)
        url = client.create_queue(QueueName="counted")["QueueUrl"]
        for i in range(5):
            client.send_message(QueueUrl=url, MessageBody=f"ready {i}")
        received = client.receive_message(QueueUrl=url, MaxNumberOfMessages=2, VisibilityTimeout=60)
        assert len(received["Messages"]) == 2
        for i in range(2):
            client.send_message(QueueUrl=url, MessageBody=f"later {i}", DelaySeconds=30)
        yield client, url, sqs_backends[DEFAULT_ACCOUNT_ID][REGION].queues["counted"]


def _moto_counts(queue: Any) -> tuple[int, int, int]:
    """The counts as moto 5.2 makes them (its Queue properties, unpatched)."""
    return (
        len([m for m in queue._messages if m.visible and not m.delayed]),
        len([m for m in queue._messages if not m.visible]),
        len([m for m in queue._messages if m.delayed]),
    )


def _patched_counts(queue: Any) -> tuple[int, int, int]:
    return (
        queue.approximate_number_of_messages,
        queue.approximate_number_of_messages_not_visible,
        queue.approximate_number_of_messages_delayed,
    )


def test_the_counts_are_moto_s_own(queue: tuple[Any, str, Any]) -> None:
    client, url, moto_queue = queue
    assert _patched_counts(moto_queue) == _moto_counts(moto_queue) == (3, 2, 2)
    names = [
        "ApproximateNumberOfMessages",
        "ApproximateNumberOfMessagesNotVisible",
        "ApproximateNumberOfMessagesDelayed",
    ]
    attributes = client.get_queue_attributes(QueueUrl=url, AttributeNames=names)["Attributes"]
    assert [attributes[name] for name in names] == ["3", "2", "2"]


@pytest.mark.parametrize("seconds", [0, 29.999, 30, 30.001, 59.999, 60, 60.001, 600])
def test_the_counts_follow_moto_s_clock_at_every_instant(
    queue: tuple[Any, str, Any], monkeypatch: pytest.MonkeyPatch, seconds: float
) -> None:
    """At a frozen instant (moto's SQS clock moved as bench/held_backlog.py moves it),
    on each side of the delays (30 s) and the visibility timeout (60 s) running out."""
    from moto.sqs import models

    _, _, moto_queue = queue
    start = max(m.sent_timestamp for m in moto_queue._messages)
    monkeypatch.setattr(models, "unix_time_millis", lambda dt=None: start + seconds * 1000.0)
    assert _patched_counts(moto_queue) == _moto_counts(moto_queue)
    if seconds >= 600:
        assert _patched_counts(moto_queue) == (7, 0, 0)

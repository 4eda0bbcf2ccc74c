"""A job a limit holds back on the SQS path goes back to the queue as a new message
sent with a delay (chalicelib/events.py). The scheduled release (release_due) counts
the queue's messages to tell a backlog from lost messages; a delayed message is in
neither of the counts it read, so every held job whose new message was still
delayed looked lost, and each release past `lost_after` sent it one more message:
for as long as a limit stayed full, its jobs' messages multiplied. Against moto
in-process, as tests/test_dynamodb_lost_messages.py."""

from __future__ import annotations

from chalicelib.clock import FakeClock
from chalicelib.storage.dynamodb import DynamoStore
from tests import test_dynamodb
from tests.test_dynamodb import Aws, add

aws, store = test_dynamodb.aws, test_dynamodb.store

# Longer than the test takes, so the new messages are still delayed when it looks
# (events.HELD_REDELIVERY_SECONDS is 2 s of real time; moto keeps the delay in real time).
HELD_DELAY = 120


def hold_back(aws: Aws, store: DynamoStore) -> list[str]:
    """What handle_sqs does with held jobs: receive their messages, send each job a new
    message with a delay, and acknowledge the old ones."""
    got = aws.sqs.receive_message(QueueUrl=aws.queue_url, MaxNumberOfMessages=10)
    messages = got.get("Messages", [])
    assert store.dispatch is not None
    assert store.dispatch.send([(m["Body"], HELD_DELAY) for m in messages]) == []
    for message in messages:
        aws.sqs.delete_message(QueueUrl=aws.queue_url, ReceiptHandle=message["ReceiptHandle"])
    return [m["Body"] for m in messages]


def test_held_jobs_delayed_messages_are_not_presumed_lost(
    aws: Aws, store: DynamoStore, clock: FakeClock
) -> None:
    held = [add(store, clock) for _ in range(4)]
    assert sorted(hold_back(aws, store)) == sorted(held)
    clock.advance(store.config.lost_after + 1)  # the limit stays full this long
    assert store.release_due() == 0
    assert aws.messages() == []  # nothing visible: the four are still delayed


def test_a_lost_message_among_held_ones_is_still_sent_again(
    aws: Aws, store: DynamoStore, clock: FakeClock
) -> None:
    held = [add(store, clock) for _ in range(3)]
    assert sorted(hold_back(aws, store)) == sorted(held)
    lost = add(store, clock)
    got = aws.sqs.receive_message(QueueUrl=aws.queue_url, MaxNumberOfMessages=10)
    [message] = got["Messages"]
    assert message["Body"] == lost
    aws.sqs.delete_message(QueueUrl=aws.queue_url, ReceiptHandle=message["ReceiptHandle"])
    clock.advance(store.config.lost_after + 1)
    # One message short: one job is sent again (the longest waiting first; which one
    # is lost the counts cannot say, and a duplicate is harmless).
    assert store.release_due() == 1
    assert len(aws.messages()) == 1

"""release_due re-sends a job whose SQS message was lost, whatever else is running,
and a send the store knows failed is tried again on the next release, not
`lost_after` later. Against moto in-process, as tests/test_dynamodb.py."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pytest

from chalicelib.clock import FakeClock
from chalicelib.models import Completion, JobState
from chalicelib.storage.dynamodb import DynamoStore
from chalicelib.storage.sqs_dispatch import Unsent
from tests import test_dynamodb
from tests.factories import token
from tests.test_dynamodb import Aws, add

# The store on moto, with its queue and bucket: tests/test_dynamodb.py's fixtures.
aws, store = test_dynamodb.aws, test_dynamodb.store


def run_from_the_queue(aws: Aws, store: DynamoStore, lease: float) -> list[str]:
    """What the worker function does: receive the visible messages (they stay in
    flight, hidden, while their jobs run) and claim their jobs."""
    got = aws.sqs.receive_message(QueueUrl=aws.queue_url, MaxNumberOfMessages=10)
    ids = [m["Body"] for m in got.get("Messages", [])]
    claimed = store.claim(len(ids), lease, ids=ids)
    assert sorted(j.id for j in claimed) == sorted(ids)
    return ids


def lose_visible_messages(aws: Aws) -> list[str]:
    """Receive and delete every visible message: their jobs' messages are lost."""
    got = aws.sqs.receive_message(QueueUrl=aws.queue_url, MaxNumberOfMessages=10)
    for message in got.get("Messages", []):
        aws.sqs.delete_message(QueueUrl=aws.queue_url, ReceiptHandle=message["ReceiptHandle"])
    return [m["Body"] for m in got.get("Messages", [])]


def test_a_lost_message_is_sent_again_while_other_jobs_run(
    aws: Aws, store: DynamoStore, clock: FakeClock
) -> None:
    """The running jobs' messages are in flight (ApproximateNumberOfMessagesNotVisible)
    for as long as they run; counted as waiting jobs' messages, two running jobs hid
    the lost messages of two waiting ones for as long as they ran."""
    lease = 4 * store.config.lost_after  # still running when the release comes
    running = [add(store, clock), add(store, clock)]
    assert sorted(run_from_the_queue(aws, store, lease)) == sorted(running)
    lost = [add(store, clock), add(store, clock)]
    assert sorted(lose_visible_messages(aws)) == sorted(lost)
    clock.advance(store.config.lost_after + 1)
    assert store.release_due() == 2
    assert sorted(aws.messages()) == sorted(lost)
    assert store.release_due() == 0  # their messages are on the queue now


def test_a_backlog_is_still_not_sent_again_while_other_jobs_run(
    aws: Aws, store: DynamoStore, clock: FakeClock
) -> None:
    """The shortfall rule holds with running jobs: waiting jobs whose messages are
    still on the queue (visible, or received and not yet claimed) are behind, not
    lost, and one lost among them is the only one sent again."""
    lease = 4 * store.config.lost_after
    running = [add(store, clock) for _ in range(3)]
    assert sorted(run_from_the_queue(aws, store, lease)) == sorted(running)
    waiting = [add(store, clock) for _ in range(4)]
    clock.advance(store.config.lost_after + 1)
    assert store.release_due() == 0  # four messages for four waiting jobs
    # One waiting job's message is received by a worker that has not claimed it
    # yet: in flight like the running jobs', but a waiting job's.
    got = aws.sqs.receive_message(QueueUrl=aws.queue_url, MaxNumberOfMessages=1)["Messages"]
    assert got[0]["Body"] in waiting
    assert store.release_due() == 0
    # Another is lost: that one, and only that one, is sent again.
    [gone] = aws.sqs.receive_message(QueueUrl=aws.queue_url, MaxNumberOfMessages=1)["Messages"]
    aws.sqs.delete_message(QueueUrl=aws.queue_url, ReceiptHandle=gone["ReceiptHandle"])
    assert store.release_due() == 1
    assert len(aws.messages()) == 3  # the two left visible, and the one sent again


def fail_sends(store: DynamoStore) -> Callable[[], None]:
    """SQS refuses every id until the returned function is called."""
    assert store.dispatch is not None
    dispatch = store.dispatch
    real = dispatch.send_sorted

    def refuse(items: Sequence[tuple[str, float, int]]) -> Unsent:
        return Unsent([job_id for job_id, _, _ in items], [])

    dispatch.send_sorted = refuse  # type: ignore[method-assign]

    def restore() -> None:
        dispatch.send_sorted = real  # type: ignore[method-assign]

    return restore


def _added(store: DynamoStore, clock: FakeClock) -> str:
    restore = fail_sends(store)
    job_id = add(store, clock)
    restore()
    return job_id


def _retried(store: DynamoStore, clock: FakeClock) -> str:
    job_id = add(store, clock)
    [job] = store.claim(1, 30.0, ids=[job_id])
    restore = fail_sends(store)
    retry = Completion(job_id, token(job), JobState.RETRYING, retry_at=clock.now())
    assert store.finish([retry]) == [True]
    restore()
    return job_id


def _reaped(store: DynamoStore, clock: FakeClock) -> str:
    job_id = add(store, clock, max_attempts=3)
    store.claim(1, 30.0, ids=[job_id])
    clock.advance(31)
    restore = fail_sends(store)
    assert store.reap_expired() == 1
    restore()
    return job_id


def _redriven(store: DynamoStore, clock: FakeClock) -> str:
    job_id = add(store, clock, max_attempts=1)
    [job] = store.claim(1, 30.0, ids=[job_id])
    assert store.finish([Completion(job_id, token(job), JobState.DEAD)]) == [True]
    restore = fail_sends(store)
    assert [j.id for j in store.redrive([job_id])] == [job_id]
    restore()
    return job_id


@pytest.mark.parametrize(
    "send", [_added, _retried, _reaped, _redriven], ids=["add", "retry", "reap", "redrive"]
)
def test_a_send_known_to_have_failed_is_tried_again_by_the_next_release(
    aws: Aws,
    store: DynamoStore,
    clock: FakeClock,
    send: Callable[[DynamoStore, FakeClock], str],
) -> None:
    """Its mark (msg_at) is taken back, as the release does for its own sends: the
    next run sends the job, instead of presuming its message lost 600 s later."""
    job_id = send(store, clock)
    job = store.get(job_id)
    assert job is not None and job.state in (JobState.QUEUED, JobState.RETRYING)
    assert "msg_at" not in aws.item(job_id)
    lose_visible_messages(aws)  # nothing of this job's is on the queue anyway
    clock.advance(60)  # the next scheduled run, well before lost_after
    assert store.release_due() == 1
    assert aws.messages() == [job_id]
    assert store.release_due() == 0

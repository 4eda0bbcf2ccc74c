"""A SendMessageBatch whose answer is lost makes at most two messages for a job, not six.

Found in stop 59 with a DynamoStore on moto_server behind a proxy that forwards each
SendMessageBatch and drops its answer (the messages are on the queue, the store
never hears): one enqueue put five messages on the queue (botocore's five tries,
each sent and each answer lost), and the store, taking the send for failed, took
back the job's message mark, so the next scheduled release sent a sixth. Each
duplicate is dropped by the claim, but costs a receive and a Lambda invocation.

Now botocore sends a batch again once after a lost answer (a pooled connection the
server had closed loses the first try's answer without SQS having read it), not
four times, and a send whose answer stayed lost keeps its job's mark: the release
leaves it to the lost-message sweep, which compares the jobs with the queue's
depth, so a message that did land is not sent again.

Everything crosses real sockets: moto_server and the proxy (tests/fault_proxy.py).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import boto3
import pytest
from botocore.config import Config

from chalicelib.clock import FakeClock
from chalicelib.storage.dynamodb import DynamoConfig, DynamoStore
from chalicelib.storage.sqs_dispatch import MAX_DELAY_SECONDS
from tests.factories import new_job
from tests.fault_proxy import FaultProxy
from tests.moto_proc import moto_server

pytestmark = [pytest.mark.aws, pytest.mark.timeout(120)]

SEND = b"AmazonSQS.SendMessageBatch"
OPTIONS = "queue=jobs&create=1&lost_after=0.001"


@dataclass
class Aws:
    proxy: FaultProxy
    direct: DynamoStore  # straight to moto_server
    proxied: DynamoStore  # through the proxy


@pytest.fixture
def aws(tmp_path: Path) -> Iterator[Aws]:
    with moto_server(tmp_path / "moto.log") as moto:
        proxy = FaultProxy(moto.port)
        try:
            direct = DynamoStore(
                DynamoConfig.from_url(f"dynamodb://jobs?{OPTIONS}&endpoint={moto.endpoint}")
            )
            proxied = DynamoStore(
                DynamoConfig.from_url(f"dynamodb://jobs?{OPTIONS}&endpoint={proxy.url}")
            )
            yield Aws(proxy, direct, proxied)
        finally:
            proxy.close()


def messages_for(store: DynamoStore, job_id: str) -> int:
    """Receive every message on the queue (hiding each for a minute); count those
    naming the job."""
    dispatch = store.dispatch
    assert dispatch is not None
    count = 0
    for _ in range(20):  # bounded: a handful of messages at most
        answer = dispatch.client.receive_message(
            QueueUrl=dispatch.queue_url, MaxNumberOfMessages=10, VisibilityTimeout=60
        )
        got = answer.get("Messages", [])
        if not got:
            return count
        count += sum(1 for m in got if job_id in m["Body"])
    raise AssertionError("the queue kept answering messages")


def test_a_lost_send_answer_makes_at_most_two_messages_for_the_job(aws: Aws) -> None:
    job = new_job(aws.direct.clock)
    with aws.proxy.losing_replies(SEND) as lost:
        aws.proxied.add([job])
    assert lost[0] >= 1
    # The scheduled release after the lost answer: the job's message did land.
    aws.direct.release_due()
    assert messages_for(aws.direct, job.id) <= 2
    stored = aws.direct.get(job.id)
    assert stored is not None and stored.state.value == "queued"


def test_a_send_that_never_left_is_sent_again_by_the_next_release(aws: Aws) -> None:
    """The mark is still taken back when nothing was sent (no one listens at SQS's
    address), so the next release sends the job, not the sweep `lost_after` later."""
    dispatch = aws.direct.dispatch
    assert dispatch is not None
    nowhere = boto3.client(
        "sqs", endpoint_url="http://127.0.0.1:9", config=Config(retries={"max_attempts": 1})
    )
    config = dataclasses.replace(aws.direct.config, create=False)
    cut_off = DynamoStore(config, ddb=aws.direct.ddb, sqs=nowhere)
    assert cut_off.dispatch is not None
    cut_off.dispatch._url = dispatch.queue_url  # the queue's, reached at a dead port
    job = new_job(aws.direct.clock)
    cut_off.add([job])
    assert messages_for(aws.direct, job.id) == 0
    assert aws.direct.release_due() >= 1
    assert messages_for(aws.direct, job.id) == 1


def test_the_release_s_own_lost_send_is_neither_counted_nor_sent_again(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A job due too far ahead for SQS's delay gets its message from a release; when
    that send's answer is lost the release counts it as not released, says why, and
    the next release, seeing the message on the queue, sends it no other."""
    with moto_server(tmp_path / "moto.log") as moto:
        proxy = FaultProxy(moto.port)
        try:
            clock = FakeClock()
            direct, proxied = (
                DynamoStore(
                    DynamoConfig.from_url(f"dynamodb://jobs?{OPTIONS}&endpoint={endpoint}"),
                    clock,
                )
                for endpoint in (moto.endpoint, proxy.url)
            )
            job = new_job(clock, delay=MAX_DELAY_SECONDS + 30)
            direct.add([job])
            clock.advance(60)  # due within SQS's delay now
            with proxy.losing_replies(SEND), caplog.at_level(logging.WARNING):
                assert proxied.release_due() == 0
            assert "answers were lost" in caplog.text
            assert direct.release_due() == 0
            assert messages_for(direct, job.id) <= 2
        finally:
            proxy.close()


def test_a_lost_send_that_never_reached_sqs_is_sent_by_the_sweep(aws: Aws) -> None:
    """The other side of keeping the mark: when the requests were dropped before SQS
    read them, the queue is short of the job's message, and the lost-message sweep
    (here with lost_after at a millisecond) sends it."""
    dropped = [0]

    def drop_again() -> None:
        dropped[0] += 1
        aws.proxy.arm(SEND, "before", drop_again)

    aws.proxy.arm(SEND, "before", drop_again)
    job = new_job(aws.direct.clock)
    aws.proxied.add([job])
    aws.proxy.disarm()
    assert dropped[0] == 2  # the first try and botocore's one resend
    assert messages_for(aws.direct, job.id) == 0
    assert aws.direct.release_due() == 1
    assert messages_for(aws.direct, job.id) == 1

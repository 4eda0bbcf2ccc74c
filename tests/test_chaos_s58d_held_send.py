"""Chaos on the SQS worker (s58, helper D2): a job a limit holds back goes back to the
queue as a new message, and when that send fails its old message must be reported in
`batchItemFailures`, so SQS delivers it again (chalicelib/events.py).

SqsDispatch handed back the unsent *message bodies* as if they were job ids. A held
job's body is {"id": ..., "holds": N}, so it matched no job id: handle_sqs took the
send for made and acknowledged the old message too. The job stayed queued with no
message anywhere until the scheduled release presumed it lost. Found against
moto_server with the queue deleted between the receive and the send (SQS gone or
throttled is the same path); reproduced here against moto in process."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import app as spool_app
from chalicelib import events
from chalicelib.models import JobState
from chalicelib.runtime import Runtime
from chalicelib.storage.dynamodb import DynamoStore
from chalicelib.storage.sqs_dispatch import SqsDispatch
from local.emulator import context, sqs_event
from tests.sqs_chaos_kit import enqueue, failed, moto_runtime

pytestmark = [pytest.mark.aws, pytest.mark.timeout(60)]

ONE_AT_A_TIME = {"SPOOL_LIMITS": json.dumps({"type:sleep": {"concurrency": 1}})}


@pytest.fixture
def rt(tmp_path: Path) -> Iterator[Runtime]:
    with moto_runtime(tmp_path, extra=ONE_AT_A_TIME) as runtime:
        yield runtime


def dispatch_of(rt: Runtime) -> SqsDispatch:
    assert isinstance(rt.store, DynamoStore) and rt.store.dispatch is not None
    return rt.store.dispatch


def state_of(rt: Runtime, job_id: str) -> JobState:
    job = rt.store.get(job_id)
    assert job is not None
    return job.state


def test_a_held_job_whose_new_message_cannot_be_sent_keeps_its_old_one(rt: Runtime) -> None:
    first = enqueue(rt, "sleep", payload={"seconds": 0.1})
    held = enqueue(rt, "sleep", payload={"seconds": 0.1})
    dispatch = dispatch_of(rt)
    dispatch.client.delete_queue(QueueUrl=dispatch.queue_url)  # every send fails now
    event = sqs_event(spool_app.app, [first, held])
    answer = events.handle_sqs(event, context("w"))
    # Exactly the held job's message comes back; the one that ran is acknowledged.
    assert failed(answer) == [event["Records"][1]["messageId"]]
    ran, waiting = rt.store.get(first), rt.store.get(held)
    assert ran is not None and ran.state is JobState.SUCCEEDED
    assert waiting is not None and waiting.state is JobState.QUEUED
    assert waiting.attempts == 0  # a hold spends no attempt


def test_a_held_job_named_twice_hands_back_both_of_its_messages(rt: Runtime) -> None:
    first = enqueue(rt, "sleep", payload={"seconds": 0.1})
    held = enqueue(rt, "sleep", payload={"seconds": 0.1})
    dispatch = dispatch_of(rt)
    dispatch.client.delete_queue(QueueUrl=dispatch.queue_url)
    event = sqs_event(spool_app.app, [held, first, held])
    # The claim takes jobs in its own order; whichever is held, its messages come back.
    answer = events.handle_sqs(event, context("w"))
    states = {job_id: state_of(rt, job_id) for job_id in (first, held)}
    waiting = [job_id for job_id, state in states.items() if state is JobState.QUEUED]
    assert len(waiting) == 1 and JobState.SUCCEEDED in states.values()
    expected = [r["messageId"] for r in event["Records"] if waiting[0] in r["body"]]
    assert failed(answer) == expected


class RefusingClient:
    """An SQS client that refuses (SendMessageBatch's Failed list) every entry whose
    body names one of `refused`, and passes everything else to the real one."""

    def __init__(self, client: Any, refused: set[str]) -> None:
        self.client = client
        self.refused = refused

    def __getattr__(self, name: str) -> Any:
        return getattr(self.client, name)

    def send_message_batch(self, QueueUrl: str, Entries: list[Any]) -> dict[str, Any]:
        kept = [e for e in Entries if not any(j in e["MessageBody"] for j in self.refused)]
        answer: dict[str, Any] = (
            self.client.send_message_batch(QueueUrl=QueueUrl, Entries=kept)
            if kept
            else {"Successful": []}
        )
        answer["Failed"] = [
            {"Id": e["Id"], "SenderFault": False, "Code": "InternalError"}
            for e in Entries
            if e not in kept
        ]
        return answer


@pytest.mark.parametrize("holds", [0, 1, 7])
def test_refused_entries_come_back_as_job_ids_across_chunks(rt: Runtime, holds: int) -> None:
    dispatch = dispatch_of(rt)
    ids = [f"j_{n:032x}" for n in range(1, 24)]  # three chunks of SendMessageBatch
    refused = {ids[0], ids[11], ids[22]}
    proxy = SqsDispatch(RefusingClient(dispatch.client, refused), dispatch.queue_url)  # type: ignore[arg-type]
    unsent = proxy.send_held([(job_id, 0.0, holds) for job_id in ids])
    assert sorted(unsent) == sorted(refused)
    assert proxy.failing is not None


def test_a_failed_send_of_held_jobs_names_their_ids(rt: Runtime) -> None:
    dispatch = dispatch_of(rt)
    ids = [f"j_{n:032x}" for n in range(1, 13)]
    dispatch.client.delete_queue(QueueUrl=dispatch.queue_url)
    assert sorted(dispatch.send_held([(job_id, 2.0, 3) for job_id in ids])) == ids

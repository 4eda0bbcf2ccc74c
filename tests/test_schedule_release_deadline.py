"""The scheduled function's release (DynamoStore.release_due, where SQS delivers)
keeps to the invocation's time, as the SQS function's waves do: it marks and sends a
chunk of jobs at a time and begins none without time left for it, so Lambda never
cuts it off between marking jobs "message sent" and sending their messages (jobs so
marked wait `lost_after`, ten minutes, to be presumed lost and sent again). Against
DynamoDB and SQS in moto, as tests/test_aws_events.py; time is counted in requests,
so nothing here depends on the machine's speed."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from moto import mock_aws

import app as spool_app
from chalicelib.clock import FakeClock
from chalicelib.runtime import Runtime
from chalicelib.storage.dynamodb_schema import job_key
from local.emulator import scheduled_event
from tests.test_aws_events import enqueue, open_runtime, store_of

REQUEST_MS = 100  # what one AWS request costs the invocation here
JOBS = 60  # more than the invocation below has time to release


class Killed(BaseException):
    """Lambda ending the invocation at its deadline: nothing in the function runs on."""


class RequestClock:
    """A Lambda context whose remaining time shrinks by REQUEST_MS per AWS request
    made through the store's clients, and which kills the invocation (raises Killed
    from the next request) once none is left."""

    def __init__(self, rt: Runtime, budget_ms: int) -> None:
        self.budget_ms = budget_ms
        self.requests = 0
        self.running = True  # the invocation: the test's own reads afterwards are free
        store = store_of(rt)
        assert store.dispatch is not None
        for client in (store.ddb, store.dispatch.client):
            client.meta.events.register("before-call.*.*", self._spend)

    def _spend(self, **_: Any) -> None:
        if not self.running:
            return
        if self.get_remaining_time_in_millis() <= 0:
            raise Killed
        self.requests += 1

    def get_remaining_time_in_millis(self) -> int:
        return max(0, self.budget_ms - self.requests * REQUEST_MS)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def rt(tmp_path: Path, clock: FakeClock) -> Iterator[Runtime]:
    with mock_aws(), open_runtime(tmp_path, clock=clock) as runtime:
        yield runtime


def due_without_messages(rt: Runtime, clock: FakeClock) -> list[str]:
    """JOBS jobs due an hour ahead when added (too far for an SQS delay: no message),
    then the clock moved on until they are due (their messages visible at once)."""
    ids = [enqueue(rt, delay=3600) for _ in range(JOBS)]
    clock.advance(3600)
    return ids


def queued_messages(rt: Runtime) -> list[str]:
    dispatch = store_of(rt).dispatch
    assert dispatch is not None
    bodies: list[str] = []
    while True:
        got = dispatch.client.receive_message(
            QueueUrl=dispatch.queue_url, MaxNumberOfMessages=10, VisibilityTimeout=600
        ).get("Messages", [])
        if not got:
            return bodies
        bodies += [m["Body"] for m in got]


def marked(rt: Runtime, ids: list[str]) -> set[str]:
    """The jobs whose record says their message was sent (msg_at set)."""
    store = store_of(rt)
    found = set()
    for job_id in ids:
        item = store.ddb.get_item(TableName=store.table, Key=job_key(job_id))
        if "msg_at" in item.get("Item", {}):
            found.add(job_id)
    return found


def drain_due(context: RequestClock) -> dict[str, Any]:
    try:
        answer: dict[str, Any] = spool_app.app.handler_map["drain_due"](
            scheduled_event(spool_app.app), context
        )
    finally:
        context.running = False
    return answer


def test_a_release_near_its_deadline_stops_between_chunks_and_the_next_run_sends_the_rest(
    rt: Runtime, clock: FakeClock
) -> None:
    ids = due_without_messages(rt, clock)
    budget_ms = 4000  # 40 requests: about three chunks of ten, and the margin
    context = RequestClock(rt, budget_ms)

    done = drain_due(context)  # before: Killed, with every job past the 30th marked unsent

    assert context.get_remaining_time_in_millis() > 0  # it ended on its own, in time
    sent = queued_messages(rt)
    assert done["released"] == len(sent) > 0
    assert len(sent) % 10 == 0 and len(sent) < JOBS
    assert marked(rt, ids) == set(sent)  # no job marked without its message on the queue

    rest = drain_due(RequestClock(rt, 900_000))
    assert rest["released"] == JOBS - len(sent)
    assert sorted(sent + queued_messages(rt)) == sorted(ids)  # each job once

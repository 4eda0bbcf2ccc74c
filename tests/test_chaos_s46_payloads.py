"""A handler that changes the payload it was given changes nothing stored, on every store.

A handler gets the job's payload as a dict (a handler without a payload model) and
the job itself as `ctx.job`; nothing stops it from writing into either. SQLite,
Postgres, Redis and DynamoDB decode the payload afresh for each claim, so the next
attempt and GET /status see what was enqueued. The memory store (`chalice local`,
`spool serve` on memory://) handed the handler the very dict it kept.
"""

from __future__ import annotations

import random
from typing import Any

from chalicelib.clock import FakeClock
from chalicelib.handlers import JobContext, Registry
from chalicelib.models import JobState
from chalicelib.storage.base import JobStore
from chalicelib.worker import Worker, WorkerConfig
from tests.factories import new_job, stored

PAYLOAD = {"name": "a", "tags": ["x"], "nested": {"n": 1}}


def test_a_handler_that_writes_into_its_payload_leaves_the_stored_job_as_enqueued(
    store: JobStore, clock: FakeClock
) -> None:
    """Was (memory store): each attempt saw the writes of the ones before it, and the
    stored job showed them (GET /status, the dashboard, a redrive) as its payload."""
    seen: list[dict[str, Any]] = []
    registry = Registry()

    @registry.handler("echo", max_attempts=3, backoff=(0.0, 0.0))
    def meddle(payload: dict[str, Any], ctx: JobContext) -> dict[str, Any]:
        seen.append({"payload": repr(payload), "job": repr(ctx.job.payload)})
        payload["name"] = "changed"
        payload["tags"].append("y")
        payload["nested"]["n"] += 1
        ctx.job.payload["added"] = True
        if ctx.job.attempts < 3:
            raise RuntimeError("again")
        return {"done": True}

    job = store.add([new_job(clock, payload=PAYLOAD, max_attempts=3)])[0].job
    for _ in range(3):
        worker = Worker(
            store, registry, WorkerConfig(concurrency=1, lease_seconds=30), rng=random.Random(1)
        )
        try:
            worker.drain()
        finally:
            worker.close()
        clock.advance(1)
    after = stored(store, job.id)
    assert after.state is JobState.SUCCEEDED
    assert after.payload == PAYLOAD
    assert [s["payload"] for s in seen] == [repr(PAYLOAD)] * 3
    assert [s["job"] for s in seen] == [repr(PAYLOAD)] * 3


def test_the_payload_an_enqueuer_keeps_writing_into_is_not_the_stored_one(
    store: JobStore, clock: FakeClock
) -> None:
    """The dict a caller passed to `add` stays the caller's: the store keeps its own."""
    payload: dict[str, Any] = {"tags": ["x"], "nested": {"n": 1}}
    added = store.add([new_job(clock, payload=payload)])[0].job
    payload["tags"].append("y")
    payload["nested"]["n"] = 2
    payload["late"] = True
    assert stored(store, added.id).payload == {"tags": ["x"], "nested": {"n": 1}}
    [claimed] = store.claim(1, 30)
    assert claimed.payload == {"tags": ["x"], "nested": {"n": 1}}

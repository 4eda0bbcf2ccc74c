"""The Deliverer on every store (the contract suite's backends): a finished job's
webhook reaches a loopback receiver, signed, and its delivery is recorded."""

from __future__ import annotations

import json

from chalicelib.clock import FakeClock
from chalicelib.config import Settings
from chalicelib.models import Completion, JobState
from chalicelib.storage.base import JobStore
from chalicelib.webhooks import signing
from chalicelib.webhooks.deliver import Deliverer
from spool_client.webhooks import verify
from tests.factories import new_job, token
from tests.webhook_receiver import Receiver

SECRET = signing.new_secret()


def test_each_store_delivers_and_records(
    store: JobStore, clock: FakeClock, receiver: Receiver
) -> None:
    settings = Settings(
        extra={
            "SPOOL_WEBHOOKS": json.dumps({"acme": {"secrets": [SECRET]}}),
            "SPOOL_WEBHOOK_ALLOW_PRIVATE": "true",
        }
    )
    job = store.add([new_job(clock, tenant="acme", callback_url=receiver.url)])[0].job
    [running] = store.claim(1, 30)
    done = Completion(job.id, token(running), JobState.SUCCEEDED, result={"n": 7})
    assert store.finish([done]) == [True]
    assert store.webhook_counts() == {"pending": 1}
    deliverer = Deliverer(store, settings)
    try:
        assert deliverer.drain() == 1
    finally:
        deliverer.close()
    [got] = receiver.requests
    event = verify(got.body, got.headers, SECRET, now=clock.now().timestamp())
    assert event["data"]["id"] == job.id and event["data"]["result"] == {"n": 7}
    [hook] = store.webhooks(job.id, "acme")
    assert hook.state == "delivered" and hook.id == got.headers["webhook-id"]
    assert store.webhook_counts() == {}

"""GET /status/{id}?webhooks=true stays bounded for a job cycled dead -> redrive ->
dead: before the outbox kept only a job's newest finished deliveries, it answered
with every delivery the job ever had (983 after 20 s of cycling, 364 KB)."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from chalice.test import Client

import app as spool_app
from chalicelib.models import Completion, JobState
from chalicelib.runtime import Runtime
from chalicelib.webhooks import outbox
from tests.apikit import Api, installed, settings_for
from tests.factories import token

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
HOOKS = json.dumps({"tenant-a": {"secrets": [SECRET]}})


@pytest.fixture
def rt(tmp_path) -> Iterator[Runtime]:
    with installed(settings_for(tmp_path, extra={"SPOOL_WEBHOOKS": HOOKS})) as runtime:
        yield runtime


@pytest.fixture
def api(rt: Runtime) -> Iterator[Api]:
    with Client(spool_app.app) as client:
        yield Api(client)


def test_status_lists_every_pending_webhook_and_the_last_finished_ones(
    api: Api, rt: Runtime
) -> None:
    job_id = api.enqueue(
        {"type": "echo", "max_attempts": 1, "callback_url": "https://hooks.example.com/spool"}
    )
    store = rt.store
    cycles = outbox.KEPT_FINISHED + 10
    for cycle in range(cycles):
        [job] = store.claim(1, 30.0)
        assert store.finish([Completion(job.id, token(job), JobState.DEAD)]) == [True]
        if cycle < cycles - 1:
            [d] = store.claim_webhooks(1, 30.0)
            assert store.finish_webhook(d.id, token(d), "delivered")
            assert store.redrive([job_id])
    reply = api.get(f"/status/{job_id}?webhooks=true")
    assert reply.status == 200
    states = [w["state"] for w in reply.json["webhooks"]]
    assert states == ["delivered"] * outbox.KEPT_FINISHED + ["pending"]

"""Chaos on the SQS worker path (s49, helper E): batches that mix good and poison
messages, repeated deliveries, messages for jobs already finished, cancelled, purged,
never enqueued or another tenant's, run by events.handle_sqs against moto in process."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import app as spool_app
from chalicelib import events
from chalicelib.models import JobState
from chalicelib.runtime import Runtime
from local.emulator import context, sqs_event
from tests.apikit import TENANT_A, TENANT_B
from tests.sqs_chaos_kit import enqueue, failed, moto_runtime

pytestmark = [pytest.mark.aws, pytest.mark.timeout(60)]


@pytest.fixture
def rt(tmp_path: Path) -> Iterator[Runtime]:
    with moto_runtime(tmp_path) as runtime:
        yield runtime


def job(rt: Runtime, job_id: str) -> Any:
    found = rt.store.get(job_id)
    assert found is not None
    return found


def test_a_mixed_batch_runs_each_good_job_once_and_names_only_the_poison(rt: Runtime) -> None:
    good = enqueue(rt, payload={"n": 1})
    other = enqueue(rt, tenant=TENANT_B, payload={"n": 2})
    done = enqueue(rt, payload={"n": 3})
    cancelled = enqueue(rt, payload={"n": 4})
    rt.service.cancel(cancelled, TENANT_A)
    never = "j_" + "0" * 32
    ids = [good, good, other, done, cancelled, never, "bogus"]
    # `done` first runs in its own batch.
    assert failed(events.handle_sqs(sqs_event(spool_app.app, [done]), context("w"))) == []
    assert job(rt, done).state is JobState.SUCCEEDED
    event = sqs_event(spool_app.app, ids)
    event["Records"].append({**event["Records"][0], "messageId": "m-json", "body": "{not json"})
    event["Records"].append({**event["Records"][0], "messageId": "m-list", "body": '{"id": [1]}'})
    answer = events.handle_sqs(event, context("w"))
    assert failed(answer) == ["msg-6-bogus", "m-json", "m-list"]
    for job_id in (good, other, done):
        finished = job(rt, job_id)
        assert finished.state is JobState.SUCCEEDED and finished.attempts == 1
    assert job(rt, cancelled).state is JobState.CANCELLED
    assert job(rt, cancelled).attempts == 0


def test_a_late_copy_of_a_purged_jobs_message_is_dropped_with_a_warning(
    rt: Runtime, caplog: pytest.LogCaptureFixture
) -> None:
    from datetime import timedelta

    purged, kept = enqueue(rt, payload={"n": 1}), enqueue(rt, payload={"n": 2})
    assert failed(events.handle_sqs(sqs_event(spool_app.app, [purged]), context("w"))) == []
    assert rt.store.purge(rt.store.clock.now() + timedelta(seconds=1)) == 1
    assert rt.store.get(purged) is None
    answer = events.handle_sqs(sqs_event(spool_app.app, [purged, kept]), context("w"))
    assert failed(answer) == []
    assert job(rt, kept).state is JobState.SUCCEEDED
    assert rt.store.get(purged) is None  # not brought back half-written
    assert any(
        purged in r.getMessage() and "does not exist" in r.getMessage()
        for r in caplog.records
        if r.levelname == "WARNING"
    )

"""Chaos on S3-held payloads under the SQS worker (s49, helper E): a job whose
payload object was deleted before it ran is buried once (payload_missing), its
duplicate deliveries and a redrive do not loop it, and the jobs beside it run."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from chalice.test import Client

import app as spool_app
from chalicelib import events
from chalicelib.models import JobState
from chalicelib.runtime import Runtime
from chalicelib.storage.dynamodb import DynamoStore
from local.emulator import context, sqs_event
from tests.apikit import Api
from tests.sqs_chaos_kit import enqueue, failed, moto_runtime

BIG = {"blob": "x" * 150_000}  # over offload_bytes: kept in S3


pytestmark = [pytest.mark.aws, pytest.mark.timeout(60)]


@pytest.fixture
def rt(tmp_path: Path) -> Iterator[Runtime]:
    with moto_runtime(tmp_path) as runtime:
        yield runtime


def test_a_deleted_payload_is_buried_once_through_duplicates_and_a_redrive(rt: Runtime) -> None:
    assert isinstance(rt.store, DynamoStore) and rt.store.blobs is not None
    gone = enqueue(rt, payload=BIG)
    big = enqueue(rt, payload=BIG)
    rt.store.blobs.client.delete_object(Bucket="jobs-bucket", Key=f"spool/payloads/{gone}.json")
    event = sqs_event(spool_app.app, [gone, big, gone])
    assert failed(events.handle_sqs(event, context("w"))) == []
    dead, ran = rt.store.get(gone), rt.store.get(big)
    assert dead is not None and dead.state is JobState.DEAD
    assert dead.last_error is not None and "missing" in dead.last_error
    assert ran is not None and ran.state is JobState.SUCCEEDED and ran.result == BIG
    # A late duplicate: dropped, not run, not failed.
    assert failed(events.handle_sqs(sqs_event(spool_app.app, [gone]), context("w"))) == []
    api = Api(Client(spool_app.app))
    shown = api.get(f"/status/{gone}")
    assert shown.status == 200, shown.body
    assert shown.json["payload"]["error"] == "payload_missing"
    listed = api.get("/dlq")
    assert listed.status == 200 and gone in listed.body.decode()
    redriven = api.post(f"/dlq/{gone}/redrive")
    assert redriven.status == 200, redriven.body
    assert failed(events.handle_sqs(sqs_event(spool_app.app, [gone]), context("w"))) == []
    again = rt.store.get(gone)
    assert again is not None and again.state is JobState.DEAD
    assert again.last_error is not None and "missing" in again.last_error

"""The payload bucket itself gone (deleted with its objects, or SPOOL_STORE_URL naming
a bucket that does not exist): a job kept in S3 is still shown, with its error.

Found by a chaos pass over the AWS path (stop 56): with the bucket deleted, S3 answers
every GetObject NoSuchBucket, which the store read as an outage. A tenant's
`GET /status/{id}` of a job whose payload was offloaded answered 503 "try again
shortly" for good, and so did `GET /jobs` and, once the worker had retried the job to
its last attempt ("could not be read: NoSuchBucket"), `GET /dlq`: one such job made
the tenant's whole listing and dead-letter queue unreadable, and the dead job could
be seen nowhere. Reads now show it as an object S3 refused is shown: the job, with an
`*_unreadable` marker in place of the value saying the bucket does not exist. The
worker still never runs it on the marker nor buries it as missing (the objects may be
in the bucket the URL should have named): it retries it, then it is dead.
Against moto in process, as tests/test_dynamodb_missing_objects.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from chalice.test import Client
from moto import mock_aws

import app as spool_app
from chalicelib.clock import FakeClock
from chalicelib.runtime import Runtime
from tests.apikit import KEY_B, Api
from tests.test_aws_events import open_runtime, store_of
from tests.test_dynamodb_missing_objects import BIG, run_jobs

BUCKET = "jobs-bucket"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(datetime.now(UTC))


@pytest.fixture
def rt(tmp_path: Path, clock: FakeClock) -> Iterator[Runtime]:
    with mock_aws(), open_runtime(tmp_path, clock=clock) as runtime:
        yield runtime


def delete_bucket(rt: Runtime) -> None:
    blobs = store_of(rt).blobs
    assert blobs is not None
    s3 = blobs.client
    for obj in s3.list_objects_v2(Bucket=BUCKET).get("Contents", []):
        s3.delete_object(Bucket=BUCKET, Key=obj["Key"])
    s3.delete_bucket(Bucket=BUCKET)


def says_no_bucket(value: Any, kind: str) -> None:
    assert isinstance(value, dict), value
    assert value["error"] == f"{kind}_unreadable", value
    assert value["object"].startswith(f"s3://{BUCKET}/spool/"), value
    assert "NoSuchBucket" in value["message"] and "does not exist" in value["message"], value


def test_a_finished_job_is_shown_with_markers_when_its_bucket_is_gone(rt: Runtime) -> None:
    api = Api(Client(spool_app.app))
    big = api.enqueue({"type": "echo", "payload": BIG})
    small = api.enqueue({"type": "echo", "payload": {"n": 1}})
    assert run_jobs([big, small]) == {"batchItemFailures": []}
    delete_bucket(rt)

    status = api.get(f"/status/{big}?attempts=true")
    assert status.status == 200, status.body
    assert status.json["state"] == "succeeded"
    says_no_bucket(status.json["result"], "result")
    jobs = api.get("/jobs")
    assert jobs.status == 200, jobs.body
    assert {j["id"] for j in jobs.json["jobs"]} == {big, small}
    ui = api.get(f"/ui/api/jobs/{big}")
    assert ui.status == 200, ui.body
    # Another tenant learns nothing of it.
    assert api.get(f"/status/{big}", key=KEY_B).status == 404


def test_a_waiting_job_is_retried_not_run_nor_buried_and_its_dead_letter_is_shown(
    rt: Runtime, clock: FakeClock
) -> None:
    api = Api(Client(spool_app.app))
    big = api.enqueue({"type": "echo", "payload": BIG, "max_attempts": 2})
    small = api.enqueue({"type": "echo", "payload": {"n": 1}})
    delete_bucket(rt)

    status = api.get(f"/status/{big}")
    assert status.status == 200, status.body
    assert status.json["state"] == "queued"
    says_no_bucket(status.json["payload"], "payload")

    assert run_jobs([big, small]) == {"batchItemFailures": []}
    assert api.get(f"/status/{small}").json["state"] == "succeeded"
    first = api.get(f"/status/{big}")
    assert first.status == 200, first.body
    assert first.json["state"] == "retrying"  # not buried: the objects may be elsewhere
    assert "NoSuchBucket" in first.json["last_error"]

    clock.advance(3600)  # past its retry's backoff
    assert run_jobs([big]) == {"batchItemFailures": []}
    dead = api.get("/dlq")
    assert dead.status == 200, dead.body
    assert [j["id"] for j in dead.json["jobs"]] == [big]
    says_no_bucket(dead.json["jobs"][0]["payload"], "payload")
    assert api.get("/jobs").status == 200

"""A payload or result object in S3 larger than any answer carries (overwritten by hand
or by another program) is read no further than that: the job shows an `*_unreadable`
marker saying so; past a claim's own bound a worker never runs it.

Found by a chaos pass over the AWS path (stop 56): the store read a job's object whole,
whatever its size. Since stop 49 a payload takes at most PAYLOAD_ANSWER_BYTES in the
answers that return it (so that they fit the 6 MB Lambda can answer) and a result at
most MAX_RESULT_BYTES, but an object overwritten with 8 MB of JSON was read whole into
memory by every GET /status, every GET /jobs page holding it and every claim of it,
and answered whole: on Lambda an answer over 6 MB is API Gateway's 502, so the job
could be neither read nor listed, and it ended the tenant's /jobs pages at it (as the
stop 49 payload did); the worker ran the handler on it. A bigger object (a
gigabyte) would have taken the function's memory with it.
A claim reads more (MAX_CLAIMED_OBJECT_BYTES): a payload enqueued in code has no answer
to fit, and still runs.
Against moto in process, as tests/test_dynamodb_missing_objects.py.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from chalice.test import Client
from moto import mock_aws

import app as spool_app
from chalicelib.api.routes import PAYLOAD_ANSWER_BYTES
from chalicelib.config import BOUNDS
from chalicelib.models import JobState
from chalicelib.runtime import Runtime
from chalicelib.storage.dynamodb import MAX_CLAIMED_OBJECT_BYTES, MAX_OBJECT_BYTES
from chalicelib.worker import MAX_RESULT_BYTES
from tests.apikit import Api
from tests.test_aws_events import open_runtime, store_of
from tests.test_dynamodb_missing_objects import BIG, payload_key, run_jobs

BUCKET = "jobs-bucket"
# Valid JSON, a payload-shaped object, past what Lambda can answer.
HUGE = json.dumps({"blob": "x" * (8 * 1024 * 1024)}).encode()


@pytest.fixture
def rt(tmp_path: Path) -> Iterator[Runtime]:
    with mock_aws(), open_runtime(tmp_path) as runtime:
        yield runtime


def overwrite(rt: Runtime, key: str, data: bytes) -> None:
    blobs = store_of(rt).blobs
    assert blobs is not None
    blobs.client.put_object(Bucket=BUCKET, Key=key, Body=data)


def payload_of(size: int) -> bytes:
    """A fail-handler payload (its run succeeds) of exactly `size` bytes."""
    head = b'{"times":0,"message":"'
    return head + b"m" * (size - len(head) - 2) + b'"}'


def says_too_large(value: Any, kind: str, size: int, limit: int) -> None:
    assert isinstance(value, dict), str(value)[:200]
    assert value["error"] == f"{kind}_unreadable", str(value)[:200]
    assert f"is {size} bytes, more than the {limit}" in value["message"], value


def test_the_bounds_are_what_spool_answers_and_admits() -> None:
    # A payload POST /enqueue admits is at most PAYLOAD_ANSWER_BYTES as answers carry
    # it (never fewer than the object's bytes); a result at most MAX_RESULT_BYTES.
    assert MAX_OBJECT_BYTES == PAYLOAD_ANSWER_BYTES >= MAX_RESULT_BYTES
    assert BOUNDS["SPOOL_MAX_BODY_BYTES"][1] == MAX_CLAIMED_OBJECT_BYTES


def test_an_overwritten_huge_payload_is_a_marker_in_every_answer(rt: Runtime) -> None:
    api = Api(Client(spool_app.app))
    big = api.enqueue({"type": "echo", "payload": BIG})
    small = api.enqueue({"type": "echo", "payload": {"n": 1}})
    overwrite(rt, payload_key(big), HUGE)

    status = api.get(f"/status/{big}")
    assert status.status == 200
    assert len(status.body) < 64 * 1024
    says_too_large(status.json["payload"], "payload", len(HUGE), MAX_OBJECT_BYTES)
    jobs = api.get("/jobs")
    assert jobs.status == 200 and len(jobs.body) < 64 * 1024
    assert {j["id"] for j in jobs.json["jobs"]} == {big, small}
    ui = api.get(f"/ui/api/jobs/{big}")
    assert ui.status == 200 and len(ui.body) < 64 * 1024


def test_a_claim_runs_a_payload_up_to_its_bound_and_never_one_past_it(rt: Runtime) -> None:
    api = Api(Client(spool_app.app))
    offloaded = {"times": 0, "message": "x" * 150_000}  # kept in S3
    fits = api.enqueue({"type": "fail", "payload": offloaded})
    past = api.enqueue({"type": "fail", "payload": offloaded, "max_attempts": 1})
    small = api.enqueue({"type": "echo", "payload": {"n": 1}})
    overwrite(rt, payload_key(fits), payload_of(MAX_CLAIMED_OBJECT_BYTES))
    overwrite(rt, payload_key(past), payload_of(MAX_CLAIMED_OBJECT_BYTES + 1))

    assert run_jobs([fits, past, small]) == {"batchItemFailures": []}
    ran = rt.store.get(fits)
    assert ran is not None and ran.state is JobState.SUCCEEDED
    assert ran.result == {"succeeded_on_attempt": 1}
    assert rt.store.get(small) is not None
    job = rt.store.get(past)
    assert job is not None and job.state is JobState.DEAD and job.result is None
    assert job.last_error is not None
    assert f"more than the {MAX_CLAIMED_OBJECT_BYTES} a payload" in job.last_error


def test_an_overwritten_huge_result_is_a_marker(rt: Runtime) -> None:
    api = Api(Client(spool_app.app))
    big = api.enqueue({"type": "echo", "payload": BIG})
    assert run_jobs([big]) == {"batchItemFailures": []}
    blobs = store_of(rt).blobs
    assert blobs is not None
    listed = blobs.client.list_objects_v2(Bucket=BUCKET, Prefix="spool/results/")
    (result,) = [o["Key"] for o in listed.get("Contents", [])]
    overwrite(rt, result, HUGE)

    status = api.get(f"/status/{big}")
    assert status.status == 200 and len(status.body) < 512 * 1024
    says_too_large(status.json["result"], "result", len(HUGE), MAX_OBJECT_BYTES)
    assert status.json["payload"] == BIG


def test_a_payload_at_the_limit_still_reads_whole(rt: Runtime) -> None:
    api = Api(Client(spool_app.app))
    job_id = api.enqueue({"type": "echo", "payload": BIG})
    payload = {"blob": "y" * (MAX_OBJECT_BYTES - len('{"blob":""}'))}
    data = json.dumps(payload, separators=(",", ":")).encode()
    assert len(data) == MAX_OBJECT_BYTES
    overwrite(rt, payload_key(job_id), data)
    status = api.get(f"/status/{job_id}")
    assert status.status == 200
    assert status.json["payload"] == payload

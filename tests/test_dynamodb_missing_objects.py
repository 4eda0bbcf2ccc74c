"""A payload or result object gone from S3 (the bucket's lifecycle rule, an operator)
is a problem of its own job only: reads show the job with a marker in place of the
value, and a claim settles that job without running it and hands back the others.
Against moto in-process, as tests/test_dynamodb.py."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError
from chalice.test import Client
from moto import mock_aws

import app as spool_app
from chalicelib.clock import FakeClock
from chalicelib.models import Completion, JobQuery, JobState
from chalicelib.runtime import Runtime
from chalicelib.storage.dynamodb import DynamoStore
from local.emulator import context
from tests import test_dynamodb
from tests.apikit import Api
from tests.test_aws_events import enqueue, open_runtime, store_of
from tests.test_dynamodb import LEASE, Aws, add

# The store on moto, with its queue and bucket: tests/test_dynamodb.py's fixtures.
aws, store = test_dynamodb.aws, test_dynamodb.store

BIG = {"blob": "x" * 150_000}  # over offload_bytes: kept in S3


def payload_key(job_id: str) -> str:
    return f"spool/payloads/{job_id}.json"


def refuse_reads_of(store: DynamoStore, key: str) -> None:
    """S3 answers AccessDenied for `key` (as it does for a missing key to a role
    without s3:ListBucket)."""
    assert store.blobs is not None

    def deny(params: dict[str, Any], **_: Any) -> None:
        if params.get("Key") == key:
            raise ClientError({"Error": {"Code": "AccessDenied", "Message": "no"}}, "GetObject")

    store.blobs.client.meta.events.register("before-parameter-build.s3.GetObject", deny)


def test_a_missing_payload_object_is_shown_as_a_marker(
    aws: Aws, store: DynamoStore, clock: FakeClock
) -> None:
    gone = add(store, clock, payload=BIG)
    kept = add(store, clock, payload={"small": 1})
    aws.s3.delete_object(Bucket="jobs-bucket", Key=payload_key(gone))
    job = store.get(gone)
    assert job is not None and job.state is JobState.QUEUED
    assert job.payload == {
        "error": "payload_missing",
        "object": f"s3://jobs-bucket/{payload_key(gone)}",
        "message": f"its payload object s3://jobs-bucket/{payload_key(gone)} is missing "
        "(deleted by the bucket's lifecycle rule or by hand)",
    }
    listed = {j.id: j for j in store.list_jobs(JobQuery()).jobs}
    assert set(listed) == {gone, kept} and listed[kept].payload == {"small": 1}
    assert listed[gone].payload["error"] == "payload_missing"
    refuse_reads_of(store, payload_key(kept))  # inline: never read from S3
    assert store.get(kept) is not None


def test_a_missing_result_object_is_shown_as_a_marker(
    aws: Aws, store: DynamoStore, clock: FakeClock
) -> None:
    job_id = add(store, clock)
    [job] = store.claim(1, LEASE, ids=[job_id])
    assert job.lease_token is not None
    assert store.finish([Completion(job_id, job.lease_token, JobState.SUCCEEDED, BIG)]) == [True]
    [key] = [k for k in aws.objects() if k.startswith(f"spool/results/{job_id}/")]
    aws.s3.delete_object(Bucket="jobs-bucket", Key=key)
    done = store.get(job_id)
    assert done is not None and done.state is JobState.SUCCEEDED
    assert done.result == {
        "error": "result_missing",
        "object": f"s3://jobs-bucket/{key}",
        "message": f"its result object s3://jobs-bucket/{key} is missing "
        "(deleted by the bucket's lifecycle rule or by hand)",
    }
    assert [j.id for j in store.list_jobs(JobQuery()).jobs] == [job_id]


@pytest.mark.parametrize("batch", [2, 4], ids=["one-by-one", "one-transaction"])
def test_a_claim_buries_the_job_whose_payload_is_gone_and_hands_back_the_others(
    aws: Aws, store: DynamoStore, clock: FakeClock, batch: int
) -> None:
    gone = add(store, clock, payload=BIG)
    others = [add(store, clock, payload={"i": i}) for i in range(batch - 1)]
    aws.s3.delete_object(Bucket="jobs-bucket", Key=payload_key(gone))
    claimed = store.claim(10, LEASE, ids=[gone, *others])
    assert sorted(j.id for j in claimed) == sorted(others)
    assert all(j.state is JobState.RUNNING for j in claimed)
    dead = store.get(gone)
    assert dead is not None and dead.state is JobState.DEAD and dead.attempts == 1
    assert dead.last_error is not None
    assert f"s3://jobs-bucket/{payload_key(gone)} is missing" in dead.last_error
    [attempt] = store.attempts(gone) or []
    assert attempt.outcome == "dead" and attempt.error_type == "PayloadMissing"


def test_a_payload_s3_refuses_is_retried_not_buried(
    aws: Aws, store: DynamoStore, clock: FakeClock
) -> None:
    refused = add(store, clock, payload=BIG)
    other = add(store, clock)
    refuse_reads_of(store, payload_key(refused))
    shown = store.get(refused)
    assert shown is not None and shown.payload["error"] == "payload_unreadable"
    claimed = store.claim(10, LEASE, ids=[refused, other])
    assert [j.id for j in claimed] == [other]
    job = store.get(refused)
    assert job is not None and job.state is JobState.RETRYING and job.attempts == 1
    assert job.last_error is not None and "AccessDenied" in job.last_error
    assert job.run_at > clock.now()


# -- through the app: the API and the SQS worker ----------------------------------------------


@pytest.fixture
def rt(tmp_path: Path) -> Iterator[Runtime]:
    with mock_aws(), open_runtime(tmp_path) as runtime:
        yield runtime


def sqs_records(ids: list[str]) -> dict[str, Any]:
    return {
        "Records": [
            {"messageId": f"m-{i}", "receiptHandle": f"rh-{i}", "body": job_id}
            for i, job_id in enumerate(ids)
        ]
    }


def run_jobs(ids: list[str]) -> dict[str, Any]:
    result: dict[str, Any] = spool_app.app.handler_map["run_jobs"](
        sqs_records(ids), context("run_jobs")
    )
    return result


def test_reads_of_a_job_whose_result_object_is_gone_answer_200(rt: Runtime) -> None:
    api = Api(Client(spool_app.app))
    job_id = api.enqueue({"type": "echo", "payload": BIG})
    other = api.enqueue({"type": "echo", "payload": {"n": 1}})
    assert run_jobs([job_id, other]) == {"batchItemFailures": []}
    s3 = store_of(rt).blobs
    assert s3 is not None
    listed = s3.client.list_objects_v2(Bucket="jobs-bucket", Prefix="spool/results/")
    for obj in listed.get("Contents", []):
        s3.client.delete_object(Bucket="jobs-bucket", Key=obj["Key"])
    status = api.get(f"/status/{job_id}?attempts=true")
    assert status.status == 200, status.body
    assert status.json["result"]["error"] == "result_missing"
    jobs = api.get("/jobs")
    assert jobs.status == 200, jobs.body
    assert {j["id"] for j in jobs.json["jobs"]} == {job_id, other}
    ui = api.get(f"/ui/api/jobs/{job_id}")
    assert ui.status == 200, ui.body


def test_an_sqs_batch_with_a_missing_payload_runs_the_others(rt: Runtime) -> None:
    gone = enqueue(rt, payload=BIG)
    others = [enqueue(rt, payload={"ok": i}) for i in range(3)]
    s3 = store_of(rt).blobs
    assert s3 is not None
    s3.client.delete_object(Bucket="jobs-bucket", Key=payload_key(gone))
    # The buried job's message is acknowledged: nothing will bring its payload back.
    assert run_jobs([gone, *others]) == {"batchItemFailures": []}
    for job_id in others:
        job = rt.store.get(job_id)
        assert job is not None and job.state is JobState.SUCCEEDED and job.attempts == 1
    dead = rt.store.get(gone)
    assert dead is not None and dead.state is JobState.DEAD
    assert dead.last_error is not None and "is missing" in dead.last_error


def s3_refuses_writes(store: DynamoStore, code: str = "SlowDown", status: int = 503) -> list[int]:
    """S3 answers every PutObject with `code` (after botocore's own retries, as it would
    when S3 stays busy) while the returned list is not cleared of its "on" mark; the
    refusals are counted in it after that mark."""
    assert store.blobs is not None
    refused: list[int] = [0]  # [0]: refusing; cleared: S3 answers again

    def refuse(**_: Any) -> None:
        if not refused:
            return
        refused.append(1)
        error = {
            "Error": {"Code": code, "Message": "busy"},
            "ResponseMetadata": {"HTTPStatusCode": status},
        }
        raise ClientError(error, "PutObject")  # type: ignore[arg-type]

    store.blobs.client.meta.events.register("before-parameter-build.s3.PutObject", refuse)
    return refused


@pytest.mark.parametrize(("code", "status"), [("SlowDown", 503), ("InternalError", 500)])
def test_an_s3_that_refuses_a_big_payload_is_a_store_outage_and_stores_nothing(
    store: DynamoStore, clock: FakeClock, code: str, status: int
) -> None:
    """S3's codes were raised as they came: POST /enqueue answered 500."""
    from chalicelib.errors import StoreUnavailable

    refused = s3_refuses_writes(store, code, status)
    with pytest.raises(StoreUnavailable, match=f"S3 is unavailable: {code}"):
        add(store, clock, payload=BIG)
    assert len(refused) > 1 and store.list_jobs(JobQuery()).jobs == []


def test_an_s3_that_refuses_a_big_result_leaves_the_finish_to_be_retried(
    store: DynamoStore, clock: FakeClock
) -> None:
    """The worker retries a finish only on StoreUnavailable: with S3's code raised as it
    came, the attempt was dropped, the job sat running until its lease ran out, and was
    then counted as a worker that died (dead at max_attempts=1) though it had succeeded."""
    from chalicelib.errors import StoreUnavailable

    job_id = add(store, clock)
    [job] = store.claim(1, LEASE, ids=[job_id])
    assert job.lease_token is not None
    done = Completion(job_id, job.lease_token, JobState.SUCCEEDED, BIG)
    refused = s3_refuses_writes(store)
    with pytest.raises(StoreUnavailable):
        store.finish([done])
    assert len(refused) > 1
    refused.clear()
    assert store.finish([done]) == [True]  # the worker's retry, once S3 answers
    finished = store.get(job_id)
    assert finished is not None and finished.state is JobState.SUCCEEDED and finished.result == BIG

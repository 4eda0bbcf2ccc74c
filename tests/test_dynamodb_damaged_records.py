"""A damaged job is a problem of that job only. A payload or result that is not JSON
(an S3 object overwritten or cut short, a record edited by hand) reads as a
`*_unreadable` marker, as a refused read does; an item in any other bad shape is
left out of listings with a warning, and reading or cancelling it answers a named
error (JobUnreadable: 500 `job_unreadable`), never a bare exception that fails the
tenant's whole listing. Against moto in-process, as tests/test_dynamodb.py."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from chalice.test import Client
from moto import mock_aws

import app as spool_app
from chalicelib.clock import FakeClock
from chalicelib.errors import JobUnreadable
from chalicelib.models import Completion, JobQuery, JobState
from chalicelib.runtime import Runtime
from chalicelib.storage.dynamodb import DynamoStore
from chalicelib.storage.dynamodb_schema import job_key
from tests import test_dynamodb
from tests.apikit import Api
from tests.factories import token
from tests.test_aws_events import open_runtime, store_of
from tests.test_dynamodb import LEASE, Aws, add
from tests.test_dynamodb_missing_objects import payload_key, run_jobs

# The store on moto, with its queue and bucket: tests/test_dynamodb.py's fixtures.
aws, store = test_dynamodb.aws, test_dynamodb.store

BIG = {"blob": "x" * 150_000}  # over offload_bytes: kept in S3
SECRET = "s3cr3t-payload-value"
NOT_JSON: dict[str, bytes] = {
    "cut short": b'{"blob": "xxxxxxxx',
    "not utf-8": b"\xff\xfe\xfa not json",
}


def marker(value: Any) -> dict[str, str]:
    """A value read back as a marker: {"error", "object"?, "message"}."""
    assert isinstance(value, dict), value
    return value


def overwrite(aws: Aws, key: str, body: bytes) -> None:
    aws.s3.put_object(Bucket="jobs-bucket", Key=key, Body=body)


# -- a value that is not JSON: a marker, as for a refused read ---------------------------------


@pytest.mark.parametrize("body", list(NOT_JSON.values()), ids=list(NOT_JSON))
def test_a_payload_object_that_is_not_json_is_shown_as_unreadable(
    aws: Aws, store: DynamoStore, clock: FakeClock, body: bytes
) -> None:
    bad = add(store, clock, payload=BIG)
    good = add(store, clock, payload={"small": 1})
    overwrite(aws, payload_key(bad), body)
    url = f"s3://jobs-bucket/{payload_key(bad)}"
    job = store.get(bad)
    assert job is not None and job.state is JobState.QUEUED
    shown = marker(job.payload)
    assert shown["error"] == "payload_unreadable" and shown["object"] == url
    assert shown["message"].startswith(f"its payload object {url} is not valid JSON (")
    listed = {j.id: j for j in store.list_jobs(JobQuery()).jobs}
    assert set(listed) == {bad, good} and listed[good].payload == {"small": 1}
    cancelled = store.cancel(bad)
    assert cancelled.state is JobState.CANCELLED


def test_a_result_object_that_is_not_json_is_shown_as_unreadable(
    aws: Aws, store: DynamoStore, clock: FakeClock
) -> None:
    job_id = add(store, clock)
    [job] = store.claim(1, LEASE, ids=[job_id])
    assert store.finish([Completion(job_id, token(job), JobState.SUCCEEDED, BIG)])
    [key] = [k for k in aws.objects() if k.startswith(f"spool/results/{job_id}/")]
    overwrite(aws, key, NOT_JSON["cut short"])
    done = store.get(job_id)
    assert done is not None and done.state is JobState.SUCCEEDED
    assert marker(done.result)["error"] == "result_unreadable"
    assert "is not valid JSON" in marker(done.result)["message"]
    assert [j.id for j in store.list_jobs(JobQuery()).jobs] == [job_id]


def test_a_claim_does_not_run_a_payload_that_is_not_json(
    aws: Aws, store: DynamoStore, clock: FakeClock
) -> None:
    bad = add(store, clock, payload=BIG)
    others = [add(store, clock, payload={"i": i}) for i in range(3)]
    overwrite(aws, payload_key(bad), NOT_JSON["cut short"])
    claimed = store.claim(10, LEASE, ids=[bad, *others])
    assert sorted(j.id for j in claimed) == sorted(others)
    job = store.get(bad)
    assert job is not None and job.state is JobState.RETRYING and job.attempts == 1
    assert job.last_error is not None and "is not valid JSON" in job.last_error


def test_an_inline_payload_that_is_not_json_is_shown_as_unreadable_and_not_run(
    aws: Aws, store: DynamoStore, clock: FakeClock
) -> None:
    bad = add(store, clock)
    other = add(store, clock)
    damage(aws, bad, lambda item: item.__setitem__("payload", {"S": "{bad"}))
    job = store.get(bad)
    assert job is not None and marker(job.payload)["error"] == "payload_unreadable"
    assert "kept in the job's record, is not valid JSON" in marker(job.payload)["message"]
    assert {j.id for j in store.list_jobs(JobQuery()).jobs} == {bad, other}
    claimed = store.claim(10, LEASE, ids=[bad, other])
    assert [j.id for j in claimed] == [other]
    retried = store.get(bad)
    assert retried is not None and retried.state is JobState.RETRYING
    assert retried.last_error is not None and "not valid JSON" in retried.last_error


# -- an item in a bad shape --------------------------------------------------------------------


def damage(aws: Aws, job_id: str, edit: Callable[[dict[str, Any]], Any]) -> None:
    """Edit a job's item by hand, as an operator (or a broken release) might."""
    item = aws.item(job_id)
    edit(item)
    aws.ddb.put_item(TableName="jobs", Item=item)


SHAPES: dict[str, Callable[[dict[str, Any]], Any]] = {
    "no state": lambda it: it.pop("state"),
    "state bogus": lambda it: it.__setitem__("state", {"S": "bogus"}),
    "attempts a string": lambda it: it.__setitem__("attempts", {"S": "abc"}),
    "no created_at": lambda it: it.pop("created_at"),
    "run_at a string": lambda it: it.__setitem__("run_at", {"S": "tomorrow"}),
    "no type": lambda it: it.pop("type"),
    "no tenant": lambda it: it.pop("tenant"),
    "no max_attempts": lambda it: it.pop("max_attempts"),
    "priority huge": lambda it: it.__setitem__("priority", {"N": "1e30"}),
}


@pytest.mark.parametrize("edit", list(SHAPES.values()), ids=list(SHAPES))
def test_a_listing_skips_an_item_in_a_bad_shape_and_names_it_in_a_warning(
    aws: Aws,
    store: DynamoStore,
    clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
    edit: Callable[[dict[str, Any]], Any],
) -> None:
    good: list[str] = []
    for fields in ({}, {}, {"payload": {"secret": SECRET}}, {}):
        good.append(add(store, clock, **fields))
        clock.advance(1)  # listed in the order added
    bad = good.pop(2)
    damage(aws, bad, edit)
    caplog.set_level(logging.WARNING, logger="spool.dynamodb")
    assert [j.id for j in store.list_jobs(JobQuery()).jobs] == good
    tenant = JobQuery(tenant="default")
    assert [j.id for j in store.list_jobs(tenant).jobs] == good
    newest = JobQuery(tenant="default", newest_first=True)
    assert [j.id for j in store.list_jobs(newest).jobs] == good[::-1]
    # Page by page, one job a page: the damaged one loses no neighbour.
    seen: list[str] = []
    cursor = None
    for _ in range(10):
        page = store.list_jobs(JobQuery(tenant="default", limit=1, cursor=cursor))
        seen += [j.id for j in page.jobs]
        cursor = page.next_cursor
        if cursor is None:
            break
    assert seen == good
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(bad in w and "cannot be read" in w for w in warnings), warnings
    assert not any(SECRET in w for w in warnings)
    assert store.state_counts("default")[("default", JobState.QUEUED)] >= len(good)
    store.oldest_due(tenant="default")


@pytest.mark.parametrize("edit", list(SHAPES.values()), ids=list(SHAPES))
def test_reading_or_cancelling_an_item_in_a_bad_shape_raises_job_unreadable(
    aws: Aws, store: DynamoStore, clock: FakeClock, edit: Callable[[dict[str, Any]], Any]
) -> None:
    bad = add(store, clock, payload={"secret": SECRET})
    damage(aws, bad, edit)
    before = aws.item(bad)
    with pytest.raises(JobUnreadable, match=f"job {bad}'s stored record cannot be read") as got:
        store.get(bad)
    assert got.value.status == 500 and got.value.code == "job_unreadable"
    assert got.value.details == {"id": bad}
    assert SECRET not in got.value.message
    with pytest.raises(JobUnreadable, match=bad):
        store.cancel(bad)
    assert aws.item(bad) == before  # nothing written


def test_cancelling_an_item_without_a_version_raises_job_unreadable(
    aws: Aws, store: DynamoStore, clock: FakeClock
) -> None:
    bad = add(store, clock)
    damage(aws, bad, lambda it: it.pop("ver"))
    assert store.get(bad) is not None  # a read does not need it
    with pytest.raises(JobUnreadable, match="'ver'"):
        store.cancel(bad)


def test_a_running_item_in_a_bad_shape_does_not_stop_the_reaper(
    aws: Aws, store: DynamoStore, clock: FakeClock
) -> None:
    """Every claim and every release reaps first: an expired lease whose item cannot
    be read made each of them raise, for as long as the item stayed so."""
    bad, other = add(store, clock, max_attempts=3), add(store, clock, max_attempts=3)
    store.claim(2, LEASE, ids=[bad, other])
    damage(aws, bad, lambda it: it.pop("max_attempts"))
    clock.advance(LEASE + 1)
    assert store.reap_expired() == 1  # the other one
    retried = store.get(other)
    assert retried is not None and retried.state is JobState.RETRYING
    assert store.release_due() == 0
    assert [j.id for j in store.claim(5, LEASE, ids=[other])] == [other]


# -- through the app: the API answers ----------------------------------------------------------


@pytest.fixture
def rt(tmp_path: Path) -> Iterator[Runtime]:
    with mock_aws(), open_runtime(tmp_path) as runtime:
        yield runtime


def test_an_s3_value_that_is_not_json_fails_no_listing_status_or_cancel(rt: Runtime) -> None:
    api = Api(Client(spool_app.app))
    bad = api.enqueue({"type": "echo", "payload": BIG, "delay": 3600})
    done = api.enqueue({"type": "echo", "payload": BIG})
    assert run_jobs([done]) == {"batchItemFailures": []}
    s3 = store_of(rt).blobs
    assert s3 is not None
    listed = s3.client.list_objects_v2(Bucket="jobs-bucket", Prefix="spool/")
    for obj in listed.get("Contents", []):  # both payloads and the result: cut short
        s3.client.put_object(Bucket="jobs-bucket", Key=obj["Key"], Body=NOT_JSON["cut short"])
    for path in (f"/status/{bad}", f"/status/{done}", "/jobs", "/ui/api/jobs", "/ui/api/overview"):
        reply = api.get(path)
        assert reply.status == 200, (path, reply.body)
    assert api.get(f"/status/{bad}").json["payload"]["error"] == "payload_unreadable"
    assert api.get(f"/status/{done}").json["result"]["error"] == "result_unreadable"
    assert {j["id"] for j in api.get("/jobs").json["jobs"]} == {bad, done}
    cancel = api.post(f"/jobs/{bad}/cancel")
    assert cancel.status == 200, cancel.body


def test_an_item_in_a_bad_shape_fails_no_listing_and_is_answered_job_unreadable(
    rt: Runtime,
) -> None:
    api = Api(Client(spool_app.app))
    good = api.enqueue({"type": "echo", "payload": {"n": 1}, "delay": 3600})
    bad = api.enqueue({"type": "echo", "payload": {"secret": SECRET}, "delay": 3600})
    store = store_of(rt)
    item = store.ddb.get_item(TableName="jobs", Key=job_key(bad), ConsistentRead=True)["Item"]
    del item["max_attempts"]
    store.ddb.put_item(TableName="jobs", Item=item)
    for path in ("/jobs", "/ui/api/jobs"):
        reply = api.get(path)
        assert reply.status == 200, (path, reply.body)
        assert [j["id"] for j in reply.json["jobs"]] == [good]
    assert api.get("/ui/api/overview").status == 200
    for reply in (api.get(f"/status/{bad}"), api.post(f"/jobs/{bad}/cancel")):
        assert reply.status == 500, reply.body
        assert reply.error_code == "job_unreadable"
        assert bad in reply.json["error"]["message"]
        assert SECRET not in reply.body.decode()
    assert api.get(f"/status/{good}").status == 200

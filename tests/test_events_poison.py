"""One bad SQS record fails only itself: a body that is not a job id is reported before
any store call, and an error while processing is kept to the jobs it concerns. Against
DynamoDB and SQS in moto, through app.py's SQS handler."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError
from moto import mock_aws

import app as spool_app
from chalicelib.ids import new_job_id
from chalicelib.models import JobState
from chalicelib.runtime import Runtime
from local.emulator import context
from tests.test_aws_events import enqueue, open_runtime, state, store_of

KEY_LIMIT = 2048  # DynamoDB's partition key limit, in bytes


@pytest.fixture
def rt(tmp_path: Path) -> Iterator[Runtime]:
    with mock_aws(), open_runtime(tmp_path) as runtime:
        yield runtime


def run_jobs(bodies: dict[str, str]) -> set[str]:
    """The ids of the messages the handler reports failed; `bodies` by message id."""
    event = {
        "Records": [
            {"messageId": m, "receiptHandle": f"rh-{m}", "body": body} for m, body in bodies.items()
        ]
    }
    result: dict[str, Any] = spool_app.app.handler_map["run_jobs"](event, context("run_jobs"))
    return {f["itemIdentifier"] for f in result["batchItemFailures"]}


def keys_of(params: dict[str, Any]) -> list[str]:
    keys = [params["Key"]] if "Key" in params else []
    for request in params.get("RequestItems", {}).values():
        keys += request.get("Keys", []) if isinstance(request, dict) else []
    for action in params.get("TransactItems", []):
        keys += [v["Key"] for v in action.values() if "Key" in v]
    return [k.get("pk", {}).get("S", "") for k in keys]


def refuse_keys(rt: Runtime, refused: Any) -> list[str]:
    """DynamoDB answers ValidationException for requests naming a key `refused(pk)` picks
    (moto checks the key size only on PutItem; the service checks it everywhere)."""
    seen: list[str] = []

    def check(params: dict[str, Any], model: Any, **_: Any) -> None:
        for pk in keys_of(params):
            seen.append(pk)
            if refused(pk):
                raise ClientError(
                    {"Error": {"Code": "ValidationException", "Message": "refused key"}},
                    model.name,
                )

    store_of(rt).ddb.meta.events.register("before-parameter-build.dynamodb.*", check)
    return seen


@pytest.mark.parametrize("size", [2, 5])
def test_a_body_too_long_for_a_key_fails_alone_before_any_store_call(
    rt: Runtime, size: int, caplog: pytest.LogCaptureFixture
) -> None:
    good = [enqueue(rt, payload={"i": i}) for i in range(size - 1)]
    seen = refuse_keys(rt, lambda pk: len(pk.encode()) > KEY_LIMIT)
    bodies = {"huge": "A" * 3000, **{f"m{i}": j for i, j in enumerate(good)}}
    with caplog.at_level(logging.WARNING, logger="spool.events"):
        assert run_jobs(bodies) == {"huge"}
    assert all(state(rt, j) is JobState.SUCCEEDED for j in good)
    assert not any("AAAA" in pk for pk in seen)
    warned = [r.getMessage() for r in caplog.records]
    assert any("SQS message huge names no job" in m for m in warned)


def test_a_job_the_store_refuses_fails_alone(rt: Runtime) -> None:
    poison = enqueue(rt)
    good = [enqueue(rt, payload={"i": i}) for i in range(3)]
    refuse_keys(rt, lambda pk: pk.endswith(poison))
    bodies = {"bad": poison, **{f"m{i}": j for i, j in enumerate(good)}}
    # One wave of four: the batch read fails, then each job is tried on its own.
    assert run_jobs(bodies) == {"bad"}
    assert all(state(rt, j) is JobState.SUCCEEDED for j in good)


def test_bodies_that_name_no_job_are_logged_and_reported_for_the_dlq(
    rt: Runtime, caplog: pytest.LogCaptureFixture
) -> None:
    good = enqueue(rt)
    unknown = new_job_id()  # well formed, never enqueued (or purged): acknowledged
    bodies = {
        "notjson": "not json {",
        "xml": "<xml/>",
        "noid": "j_doesnotexist",
        "badid": '{"id": "x"}',
        "unknown": unknown,
        "good": good,
    }
    with caplog.at_level(logging.WARNING, logger="spool.events"):
        assert run_jobs(bodies) == {"notjson", "xml", "noid", "badid"}
    warned = "\n".join(r.getMessage() for r in caplog.records)
    for message_id in ("notjson", "xml", "noid", "badid", "unknown"):
        assert f"SQS message {message_id} " in warned
    assert f"names job {unknown}, which does not exist" in warned
    assert state(rt, good) is JobState.SUCCEEDED

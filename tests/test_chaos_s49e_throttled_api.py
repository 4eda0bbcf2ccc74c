"""Chaos on the API over DynamoDB (s49, helper E): every DynamoDB request throttled,
or every transaction cancelled for throttling or conflicts, answers each route with a
clear 503, never a 500, and leaves no job half-written."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError
from chalice.test import Client

import app as spool_app
from chalicelib.runtime import Runtime
from chalicelib.storage.dynamodb import DynamoStore
from tests.apikit import Api
from tests.sqs_chaos_kit import moto_runtime

pytestmark = [pytest.mark.aws, pytest.mark.timeout(60)]


@pytest.fixture
def rt(tmp_path: Path) -> Iterator[Runtime]:
    with moto_runtime(tmp_path) as runtime:
        yield runtime


def refuse(rt: Runtime, code: str, reasons: list[str] | None = None) -> list[str]:
    """Make every DynamoDB request (or, with `reasons`, every transaction) fail with
    `code` until the returned list is cleared; the operations refused are added to it
    after its first ("on") entry."""
    assert isinstance(rt.store, DynamoStore)
    refused: list[str] = ["on"]

    def fail(model: Any, params: dict[str, Any], **_: Any) -> None:
        if not refused or (reasons is not None and model.name != "TransactWriteItems"):
            return
        refused.append(model.name)
        response: dict[str, Any] = {
            "Error": {"Code": code, "Message": "chaos"},
            "ResponseMetadata": {"HTTPStatusCode": 400},
        }
        if reasons is not None:
            items = params.get("TransactItems", [])
            response["CancellationReasons"] = [
                {"Code": reasons[i % len(reasons)]} for i in range(len(items))
            ]
        raise ClientError(response, model.name)  # type: ignore[arg-type]

    rt.store.ddb.meta.events.register("before-call.dynamodb.*", fail)
    return refused


ROUTES = [
    ("POST", "/enqueue", {"type": "echo", "payload": {"a": 1}}),
    ("GET", "/jobs", None),
    ("GET", "/dlq", None),
    ("GET", "/status/j_" + "1" * 32, None),
    ("POST", "/jobs/j_" + "1" * 32 + "/cancel", None),
    ("POST", "/dlq/j_" + "1" * 32 + "/redrive", None),
]


@pytest.mark.parametrize(
    ("code", "reasons"),
    [
        ("ThrottlingException", None),
        ("ProvisionedThroughputExceededException", None),
        ("InternalServerError", None),
        ("TransactionCanceledException", ["ThrottlingError"]),
        ("TransactionCanceledException", ["TransactionConflict"]),
        ("TransactionCanceledException", ["None", "ProvisionedThroughputExceeded"]),
    ],
)
def test_a_refusing_dynamodb_is_a_503_on_every_route(
    rt: Runtime, code: str, reasons: list[str] | None
) -> None:
    api = Api(Client(spool_app.app))
    job_id = api.enqueue({"type": "echo", "payload": {"b": 2}})
    routes = [*ROUTES, ("GET", f"/status/{job_id}", None), ("POST", f"/jobs/{job_id}/cancel", None)]
    before = api.get("/jobs").json["jobs"]
    refused = refuse(rt, code, reasons)
    for method, path, body in routes:
        reply = api.call(method, path, body)
        if reasons is not None and reply.status < 500:
            continue  # a route that writes no transaction answers as it would
        assert reply.status == 503, (method, path, reply.status, reply.body)
    assert len(refused) > 1
    refused.clear()  # DynamoDB answers again: nothing was written, nor half-written
    assert api.get("/jobs").json["jobs"] == before
    shown = api.get(f"/status/{job_id}")
    assert shown.status == 200 and shown.json["state"] == "queued"

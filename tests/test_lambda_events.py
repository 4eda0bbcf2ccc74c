"""app.py driven as Lambda drives it: `app.app(event, context)` with API Gateway (REST,
proxy integration) events made by hand, some of them malformed or hostile.

API Gateway never sends most of these shapes, but a direct invocation (the console's
test event, another function, a misconfigured integration) can: each must get a 4xx
in Spool's error shape with a message saying what is wrong, never a 500 or a
Lambda error, and never a stored job.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

import app as spool_app
from chalicelib.runtime import Runtime
from local.emulator import context
from tests.apikit import KEY_A

JOB = b'{"type": "echo", "payload": {"n": 1}}'


def proxy_event(
    method: str = "POST",
    resource: str = "/enqueue",
    path: str | None = None,
    body: Any = JOB.decode(),
    base64_encoded: bool = False,
    headers: dict[str, str] | None = None,
    **fields: Any,
) -> dict[str, Any]:
    """A REST API proxy event as API Gateway builds it, every key present."""
    path = path or resource
    given = {"X-API-Key": KEY_A, "Content-Type": "application/json"} if headers is None else headers
    return {
        "resource": resource,
        "path": path,
        "httpMethod": method,
        "headers": given,
        "multiValueHeaders": {name: [value] for name, value in given.items()},
        "queryStringParameters": None,
        "multiValueQueryStringParameters": None,
        "pathParameters": None,
        "stageVariables": None,
        "requestContext": {
            "resourcePath": resource,
            "httpMethod": method,
            "path": f"/api{path}",
            "stage": "api",
            "identity": {"sourceIp": "10.1.2.3"},
        },
        "body": body,
        "isBase64Encoded": base64_encoded,
        **fields,
    }


def invoke(event: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """The function's answer: its status and its JSON body."""
    answer = spool_app.app(event, context("api_handler"))
    return answer["statusCode"], json.loads(answer["body"])


def stored(rt: Runtime) -> int:
    return sum(rt.store.counts().values())


@pytest.mark.parametrize(
    "body",
    [
        "!!!",  # no base64 letter at all: decoded leniently, it was an empty body
        "*" * 40,
        base64.b64encode(JOB).decode() + "!!",  # a valid body with junk after it
        "!" + base64.b64encode(JOB).decode(),
        base64.b64encode(JOB).decode()[:-2] + "\n" + base64.b64encode(JOB).decode()[-2:],
    ],
)
def test_a_body_marked_base64_is_decoded_strictly(rt: Runtime, body: str) -> None:
    """base64.b64decode drops every byte outside the alphabet: "!!!" was read as an
    empty body (400 "request body is empty", not what was wrong) and a valid body with
    junk around it was stored as a job."""
    status, answer = invoke(proxy_event(body=body, base64_encoded=True))
    assert status == 400, answer
    assert answer["error"]["message"] == (
        "the request body is marked base64-encoded but is not valid base64"
    )
    assert stored(rt) == 0
    status, _ = invoke(proxy_event(body=base64.b64encode(JOB).decode(), base64_encoded=True))
    assert status == 201

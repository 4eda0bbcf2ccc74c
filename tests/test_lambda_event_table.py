"""Every part of an API Gateway REST proxy event, missing, null, of the wrong type or
huge, handed to the API function as Lambda hands it (`app.app(event, context)`).

A direct invocation (the console's test event, another function, an HTTP API whose
payload is format 2.0) can send what API Gateway never does. Each case answers what
its table row says: a 4xx in Spool's error shape, or, where the oddity is one the
request does not read, what the well-formed request answers. Never a 5xx, never a
stored job for a refused request, and never an ERROR line with a traceback: a
client's malformed input is not an operator's page, and a traceback means code ran
on input nobody had checked.
"""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Callable
from typing import Any

import pytest

import app as spool_app
from chalicelib.runtime import Runtime
from local.emulator import context
from tests.apikit import KEY_A
from tests.test_lambda_events import JOB, proxy_event

HUGE = "x" * 2_000_000  # past Lambda's 6 MB request only when several add up
ERROR_CODES = {400: "bad_request", 401: "unauthorized", 422: "validation_error"}


def _set(path: str, value: Any, event: dict[str, Any] | None = None) -> dict[str, Any]:
    """`event` (a well-formed enqueue by default) with the part at dotted `path` set."""
    event = event if event is not None else proxy_event()
    *parents, last = path.split(".")
    part = event
    for name in parents:
        part = part[name]
    part[last] = value
    return event


def _drop(path: str, event: dict[str, Any] | None = None) -> dict[str, Any]:
    event = event if event is not None else proxy_event()
    *parents, last = path.split(".")
    part = event
    for name in parents:
        part = part[name]
    del part[last]
    return event


def _status(**fields: Any) -> dict[str, Any]:
    event = proxy_event("GET", "/status/{id}", "/status/j_1", body=None, **fields)
    if "pathParameters" not in fields:
        event["pathParameters"] = {"id": "j_1"}
    return event


def _jobs(query: Any) -> dict[str, Any]:
    return proxy_event("GET", "/jobs", body=None, multiValueQueryStringParameters=query)


def _headers(given: Any) -> dict[str, Any]:
    """An enqueue whose headers and multiValueHeaders both say `given` (values as lists
    in the second when they are strings)."""
    many = (
        {k: [v] if isinstance(v, str) else v for k, v in given.items()}
        if isinstance(given, dict)
        else given
    )
    return {**proxy_event(), "headers": given, "multiValueHeaders": many}


def _with_header(name: str, value: Any) -> dict[str, Any]:
    event = proxy_event()
    event["headers"][name] = value
    return event


def _with_many_header(name: str, value: Any) -> dict[str, Any]:
    event = proxy_event()
    event["multiValueHeaders"][name] = value
    return event


V2 = {  # an HTTP API (payload format 2.0) event, which this REST API is never sent
    "version": "2.0",
    "routeKey": "POST /enqueue",
    "rawPath": "/enqueue",
    "rawQueryString": "",
    "headers": {"x-api-key": KEY_A, "content-type": "application/json"},
    "requestContext": {
        "http": {"method": "POST", "path": "/enqueue", "sourceIp": "10.1.2.3"},
        "stage": "$default",
    },
    "body": JOB.decode(),
    "isBase64Encoded": False,
}

# case -> (the event, built per test; the status it gets). 201/200/404: what the
# well-formed request answers, the oddity being in a part it does not read.
CASES: dict[str, tuple[Callable[[], Any], int]] = {
    # the event itself
    "event null": (lambda: None, 400),
    "event a list": (lambda: [proxy_event()], 400),
    "event a string": (lambda: "POST /enqueue", 400),
    "event empty": (lambda: {}, 400),
    "an HTTP API v2 event": (lambda: json.loads(json.dumps(V2)), 400),
    # headers
    "headers missing": (lambda: _drop("headers"), 400),
    "headers null": (lambda: _headers(None), 401),
    "headers a list": (lambda: _headers(["X-API-Key", KEY_A]), 400),
    "headers a string": (lambda: _headers("X-API-Key: k"), 400),
    "a header value a number": (lambda: _with_header("X-API-Key", 5), 400),
    "the key header null": (lambda: _with_header("X-API-Key", None), 400),
    "another header null": (lambda: _with_header("Accept", None), 400),
    "the content type null": (lambda: _with_header("Content-Type", None), 400),
    "the content type a list": (lambda: _with_header("Content-Type", ["a/b"]), 400),
    "a header value an object": (lambda: _with_header("X-Trace", {"a": 1}), 400),
    "a header value true": (lambda: _with_header("X-Forwarded-For", True), 400),
    "a huge header": (lambda: _with_header("X-Big", HUGE), 201),
    "a huge key header": (lambda: _headers({"X-API-Key": HUGE}), 401),
    # multiValueHeaders
    "multiValueHeaders missing": (lambda: _drop("multiValueHeaders"), 201),
    "multiValueHeaders null": (lambda: _set("multiValueHeaders", None), 201),
    "multiValueHeaders a list": (lambda: _set("multiValueHeaders", [["a", "b"]]), 400),
    "multiValueHeaders a string": (lambda: _set("multiValueHeaders", "a"), 400),
    "a multi header a string": (lambda: _with_many_header("Accept", "a/b"), 400),
    "a multi header null": (lambda: _with_many_header("Accept", None), 400),
    "a multi header empty": (lambda: _with_many_header("Accept", []), 400),
    "a multi header holding null": (lambda: _with_many_header("Accept", [None]), 400),
    "a multi key holding null": (lambda: _with_many_header("X-API-Key", [KEY_A, None]), 400),
    "a multi header holding a number": (lambda: _with_many_header("Accept", ["a", 1]), 400),
    "a multi header holding a list": (lambda: _with_many_header("Accept", [["a"]]), 400),
    # queryStringParameters (chalice and the routes read multiValueQueryStringParameters)
    "queryStringParameters missing": (lambda: _drop("queryStringParameters"), 201),
    "queryStringParameters a list": (lambda: _set("queryStringParameters", [1]), 201),
    "queryStringParameters holding null": (
        lambda: _set("queryStringParameters", {"a": None}),
        201,
    ),
    # multiValueQueryStringParameters
    "query missing": (lambda: _drop("multiValueQueryStringParameters"), 400),
    "query a list": (lambda: _jobs([["state", "dead"]]), 400),
    "query a string": (lambda: _jobs("state=dead"), 400),
    "query value null": (lambda: _jobs({"state": None}), 400),
    "query value a string": (lambda: _jobs({"state": "dead"}), 400),
    "query value empty": (lambda: _jobs({"state": []}), 400),
    "query value holding null": (lambda: _jobs({"state": [None]}), 400),
    "query value holding null after a string": (lambda: _jobs({"state": ["dead", None]}), 400),
    "query value holding a number": (lambda: _jobs({"limit": [5]}), 400),
    "query value holding an object": (lambda: _jobs({"state": [{"a": 1}]}), 400),
    "query on enqueue holding null": (
        lambda: _set("multiValueQueryStringParameters", {"a": [None]}),
        400,
    ),
    "query value huge": (lambda: _jobs({"state": [HUGE]}), 422),
    "query with many names": (lambda: _jobs({f"n{i}": ["1"] for i in range(5000)}), 422),
    # pathParameters
    "pathParameters missing": (lambda: _drop("pathParameters", _status()), 400),
    "pathParameters null": (lambda: _status(pathParameters=None), 400),
    "pathParameters a list": (lambda: _status(pathParameters=["j_1"]), 400),
    "path id null": (lambda: _status(pathParameters={"id": None}), 400),
    "path id a number": (lambda: _status(pathParameters={"id": 7}), 400),
    "path id a list": (lambda: _status(pathParameters={"id": ["j_1"]}), 400),
    "path id huge": (lambda: _status(pathParameters={"id": HUGE}), 404),
    "an extra path parameter null": (
        lambda: _status(pathParameters={"id": "j_1", "x": None}),
        400,
    ),
    "pathParameters on a route without any": (lambda: _set("pathParameters", {"id": 1}), 400),
    # stageVariables
    "stageVariables missing": (lambda: _drop("stageVariables"), 400),
    "stageVariables a list": (lambda: _set("stageVariables", ["a"]), 400),
    # body
    "body missing": (lambda: _drop("body"), 400),
    "body null": (lambda: _set("body", None), 400),
    "body a number": (lambda: _set("body", 5), 400),
    "body true": (lambda: _set("body", True), 400),
    "body an object": (lambda: _set("body", {"type": "echo"}), 400),
    "body a list": (lambda: _set("body", ["x"]), 400),
    "body empty": (lambda: _set("body", ""), 400),
    "body huge": (lambda: _set("body", '{"type": "echo", "payload": "' + HUGE + '"}'), 413),
    "body a lone surrogate": (lambda: _set("body", '{"type": "\ud800"}'), 400),
    # isBase64Encoded
    "isBase64Encoded missing": (lambda: _drop("isBase64Encoded"), 201),
    "isBase64Encoded null": (lambda: _set("isBase64Encoded", None), 400),
    "isBase64Encoded a string": (lambda: _set("isBase64Encoded", "true"), 400),
    "isBase64Encoded 1": (lambda: _set("isBase64Encoded", 1), 400),
    "isBase64Encoded and body not base64": (
        lambda: proxy_event(body="!!", base64_encoded=True),
        400,
    ),
    "isBase64Encoded and body not ASCII": (
        lambda: proxy_event(body="é" + base64.b64encode(JOB).decode(), base64_encoded=True),
        400,
    ),
    # requestContext
    "requestContext missing": (lambda: _drop("requestContext"), 400),
    "requestContext null": (lambda: _set("requestContext", None), 400),
    "requestContext a list": (lambda: _set("requestContext", []), 400),
    "requestContext a string": (lambda: _set("requestContext", "ctx"), 400),
    "requestContext.httpMethod missing": (lambda: _drop("requestContext.httpMethod"), 400),
    "requestContext.httpMethod null": (lambda: _set("requestContext.httpMethod", None), 400),
    "requestContext.httpMethod a number": (lambda: _set("requestContext.httpMethod", 1), 400),
    "requestContext.httpMethod lower case": (
        lambda: _set("requestContext.httpMethod", "post"),
        405,
    ),
    "requestContext.httpMethod unknown": (lambda: _set("requestContext.httpMethod", "BREW"), 405),
    "requestContext.httpMethod huge": (lambda: _set("requestContext.httpMethod", HUGE), 405),
    "requestContext.resourcePath missing": (lambda: _drop("requestContext.resourcePath"), 400),
    "requestContext.resourcePath null": (
        lambda: _set("requestContext.resourcePath", None),
        400,
    ),
    "requestContext.resourcePath a list": (
        lambda: _set("requestContext.resourcePath", ["/enqueue"]),
        400,
    ),
    "requestContext.resourcePath unknown": (
        lambda: _set("requestContext.resourcePath", "/nope"),
        400,
    ),
    "requestContext.resourcePath huge": (lambda: _set("requestContext.resourcePath", HUGE), 400),
    "requestContext.path missing": (lambda: _drop("requestContext.path"), 201),
    "requestContext.path null": (lambda: _set("requestContext.path", None), 201),
    "requestContext.path a number": (lambda: _set("requestContext.path", 7), 201),
    "requestContext.path a list": (lambda: _set("requestContext.path", ["/api"]), 201),
    "requestContext.path huge": (lambda: _set("requestContext.path", "/" + HUGE), 201),
    "requestContext.stage missing": (lambda: _drop("requestContext.stage"), 201),
    "requestContext.stage a number": (lambda: _set("requestContext.stage", 1), 201),
    "requestContext.stage a list": (lambda: _set("requestContext.stage", ["api"]), 201),
    "requestContext.stage an object": (lambda: _set("requestContext.stage", {"a": 1}), 201),
    "requestContext.identity missing": (lambda: _drop("requestContext.identity"), 201),
    "requestContext.identity null": (lambda: _set("requestContext.identity", None), 201),
    "requestContext.identity a string": (lambda: _set("requestContext.identity", "me"), 400),
    "requestContext.identity a list": (lambda: _set("requestContext.identity", ["a"]), 400),
    "sourceIp null": (lambda: _set("requestContext.identity.sourceIp", None), 201),
    "sourceIp a number": (lambda: _set("requestContext.identity.sourceIp", 10), 201),
    "sourceIp a list": (lambda: _set("requestContext.identity.sourceIp", ["1.2.3.4"]), 201),
    "sourceIp huge": (lambda: _set("requestContext.identity.sourceIp", HUGE), 201),
    # the top-level method, path and resource (chalice reads requestContext's)
    "httpMethod missing": (lambda: _drop("httpMethod"), 201),
    "httpMethod a number": (lambda: _set("httpMethod", 1), 201),
    "path missing": (lambda: _drop("path"), 201),
    "path null": (lambda: _set("path", None), 201),
    "path a number": (lambda: _set("path", 7), 400),
    "path a list": (lambda: _set("path", ["/enqueue"]), 400),
    "path huge": (lambda: _set("path", "/" + HUGE), 201),
    "resource missing": (lambda: _drop("resource"), 201),
    "resource a number": (lambda: _set("resource", 1), 201),
    # the dashboard's page reads requestContext.path itself
    "ui page, requestContext.path a number": (
        lambda: _set("requestContext.path", 7, proxy_event("GET", "/ui", body=None)),
        200,
    ),
    "ui page, requestContext.path a list": (
        lambda: _set("requestContext.path", ["/ui/"], proxy_event("GET", "/ui", body=None)),
        200,
    ),
}


def stored(rt: Runtime) -> int:
    return sum(rt.store.counts().values())


@pytest.mark.parametrize("case", list(CASES))
def test_each_malformed_part_of_an_api_event_is_answered_cleanly(
    rt: Runtime, case: str, caplog: pytest.LogCaptureFixture
) -> None:
    build, expected = CASES[case]
    event = build()
    with caplog.at_level(logging.INFO):
        answer = spool_app.app(event, context("api_handler"))
    status = answer["statusCode"]
    assert status == expected, (status, answer.get("body", "")[:300])
    tracebacks = [
        f"{r.name} {r.levelname} {r.getMessage()[:200]}"
        for r in caplog.records
        if r.exc_info or r.levelno >= logging.ERROR
    ]
    assert tracebacks == [], "client input logged as an error"
    if status >= 400:
        body = json.loads(answer["body"])
        assert set(body) == {"error"}, body
        assert isinstance(body["error"]["message"], str) and body["error"]["message"]
        if status in ERROR_CODES:
            assert body["error"]["code"] == ERROR_CODES[status], body
        assert answer["headers"]["Content-Type"] == "application/json"
        assert stored(rt) == 0, "a refused request stored a job"
    elif status == 201:
        assert stored(rt) == 1


def test_an_http_api_event_is_told_apart(rt: Runtime) -> None:
    """A v2 event has no requestContext.resourcePath: the refusal says which format
    this function takes, not only that a field is missing."""
    answer = spool_app.app(json.loads(json.dumps(V2)), context("api_handler"))
    message = json.loads(answer["body"])["error"]["message"]
    assert answer["statusCode"] == 400
    assert "payload format 2.0" in message and "REST API" in message, message

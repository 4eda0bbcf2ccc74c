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


def _without(*names: str) -> dict[str, Any]:
    event = proxy_event()
    for name in names:
        del event[name]
    return event


def _status_event(**fields: Any) -> dict[str, Any]:
    return proxy_event("GET", "/status/{id}", "/status/j_1", body=None, **fields)


def _jobs_event(query: Any) -> dict[str, Any]:
    return proxy_event("GET", "/jobs", body=None, multiValueQueryStringParameters=query)


MALFORMED = {
    "no requestContext": (_without("requestContext"), "requestContext"),
    "requestContext null": (proxy_event(requestContext=None), "requestContext"),
    "no httpMethod": (proxy_event(requestContext={"resourcePath": "/enqueue"}), "httpMethod"),
    "resourcePath a number": (
        proxy_event(requestContext={"resourcePath": 7, "httpMethod": "POST"}),
        "resourcePath",
    ),
    "identity a string": (
        proxy_event(
            requestContext={"resourcePath": "/enqueue", "httpMethod": "POST", "identity": "x"}
        ),
        "identity",
    ),
    "a resource no route has": (proxy_event(resource="/nowhere"), "resourcePath"),
    "no body key": (_without("body"), "body"),
    "no headers key": (_without("headers"), "headers"),
    "no query key": (
        _without("multiValueQueryStringParameters"),
        "multiValueQueryStringParameters",
    ),
    "no pathParameters key": (_without("pathParameters"), "pathParameters"),
    "no stageVariables key": (_without("stageVariables"), "stageVariables"),
    "body a number": (proxy_event(body=123), "body"),
    "body an object": (proxy_event(body={"type": "echo"}), "body"),
    "base64 body a list": (proxy_event(body=[1], base64_encoded=True), "body"),
    "isBase64Encoded a string": (proxy_event(isBase64Encoded="false"), "isBase64Encoded"),
    "headers a list": ({**proxy_event(), "headers": ["x"]}, "headers"),
    "a header value a number": (
        proxy_event(headers={"X-API-Key": 5, "Content-Type": "application/json"}),  # type: ignore[dict-item]
        "headers",
    ),
    "multiValueHeaders a string list": (
        proxy_event(multiValueHeaders={"X-API-Key": KEY_A}),
        "multiValueHeaders",
    ),
    "query values null": (_jobs_event({"state": None}), "multiValueQueryStringParameters"),
    "query values empty": (_jobs_event({"state": []}), "multiValueQueryStringParameters"),
    "query values a string": (_jobs_event({"state": "dead"}), "multiValueQueryStringParameters"),
    "query a list": (_jobs_event([["state", "dead"]]), "multiValueQueryStringParameters"),
    "path id missing": (_status_event(pathParameters=None), "pathParameters"),
    "path id absent": (_status_event(pathParameters={"job": "j_1"}), "pathParameters"),
    "path id a number": (_status_event(pathParameters={"id": 1}), "pathParameters"),
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_an_event_api_gateway_would_not_send_is_400_saying_what_is_wrong(
    rt: Runtime, case: str
) -> None:
    """Chalice reads the event without looking: a missing key raised out of the
    handler (a Lambda error: API Gateway's 502), a body that is not text or a path
    parameter missing was a 500, a query value that is not a list a 500 or a wrong
    "repeated" 400."""
    event, named = MALFORMED[case]
    answer = spool_app.app(event, context("api_handler"))
    assert answer["statusCode"] == 400, answer
    body = json.loads(answer["body"])
    assert body["error"]["code"] == "bad_request"
    message = body["error"]["message"]
    assert message.startswith("not an API Gateway REST proxy event: "), message
    assert named in message, message
    assert answer["headers"]["Content-Type"] == "application/json"
    assert answer["headers"]["Cache-Control"] == "no-store"
    assert stored(rt) == 0


def test_a_well_formed_event_is_still_served(rt: Runtime) -> None:
    for event in (
        proxy_event(),
        proxy_event(body=None, headers={}, multiValueHeaders=None),  # no key: 401
        {**proxy_event(), "headers": None, "multiValueHeaders": None},  # no key: 401
        proxy_event(body=JOB),  # what `spool serve` and chalice local pass: bytes
    ):
        answer = spool_app.app(event, context("api_handler"))
        assert answer["statusCode"] in (201, 401), answer


def test_headers_and_multi_value_headers_that_disagree_are_a_repeated_header(
    rt: Runtime,
) -> None:
    """API Gateway puts a header's last value in `headers` and all of them in
    multiValueHeaders; an event whose two say different keys was served as the tenant
    `headers` named, where `spool serve` refuses a key given twice."""
    from tests.apikit import KEY_B

    event = proxy_event(multiValueHeaders={"X-API-Key": [KEY_B], "Content-Type": [JSON]})
    status, answer = invoke(event)
    assert status == 400, answer
    assert answer["error"]["details"] == {"header": "x-api-key"}
    assert stored(rt) == 0


JSON = "application/json"


class CountedWalks(dict[str, Any]):
    """multiValueHeaders that count how often a check or a route walks them."""

    walks = 0

    def items(self) -> Any:
        CountedWalks.walks += 1
        return super().items()

    def values(self) -> Any:
        CountedWalks.walks += 1
        return super().values()


def test_multi_value_headers_are_walked_once_a_request(rt: Runtime) -> None:
    """Was: gateway_event's value check walked them (are they lists of strings?) and
    app.py's _repeated_headers walked them again (which names repeat?). One walk now
    answers both, and the answers are as before."""
    CountedWalks.walks = 0
    many = CountedWalks({"X-API-Key": [KEY_A], "Accept": ["a", "b"], "Content-Type": [JSON]})
    status, answer = invoke(proxy_event(multiValueHeaders=many))
    assert status == 201, answer
    assert CountedWalks.walks == 1
    CountedWalks.walks = 0
    bad = CountedWalks({"X-API-Key": [KEY_A], "Accept": [1]})
    status, answer = invoke(proxy_event(multiValueHeaders=bad))
    assert status == 400 and "multiValueHeaders" in answer["error"]["message"], answer
    assert stored(rt) == 1

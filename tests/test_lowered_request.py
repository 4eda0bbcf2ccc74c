"""local/direct_dispatch.lowered_request builds the Request chalice's own __init__ builds.

`spool serve` makes one chalice Request per request; lowered_request skips only the
second lower-casing of header names that event_for already lower-cased. Everything
the view, app.py's shell or a middleware can read off the request must be the same.
"""

from __future__ import annotations

from typing import Any

from chalice.app import CaseInsensitiveMapping, MultiDict, Request
from hypothesis import given, settings
from hypothesis import strategies as st

import app as spool_app
from local.direct_dispatch import lowered_request
from local.server import ChaliceWSGI, _headers

names = st.text("abcdefghijklmnopqrstuvwxyz-0123456789_", min_size=1, max_size=12)
texts = st.text(max_size=12)


@st.composite
def events(draw: st.DrawFn) -> dict[str, Any]:
    event: dict[str, Any] = {
        "requestContext": {
            "httpMethod": draw(st.sampled_from(["GET", "POST", "HEAD", "PUT"])),
            "resourcePath": draw(st.sampled_from(["/enqueue", "/status/{id}", "/jobs"])),
            "identity": {"sourceIp": "127.0.0.1"},
            "path": draw(texts),
        },
        "headers": draw(st.dictionaries(names, texts, max_size=8)),
        "pathParameters": draw(st.dictionaries(names, texts, max_size=2)),
        "stageVariables": {},
        "multiValueQueryStringParameters": draw(
            st.none() | st.dictionaries(names, st.lists(texts, min_size=1, max_size=3))
        ),
        "body": draw(st.none() | st.binary(max_size=20) | texts),
    }
    if draw(st.booleans()):
        event["isBase64Encoded"] = draw(st.booleans())
    return event


def _seen(request: Request) -> dict[str, Any]:
    """Every attribute, the mappings by type and content."""
    seen = dict(vars(request))
    headers = seen.pop("headers")
    query = seen.pop("query_params")
    seen["headers"] = (type(headers), type(headers._dict), headers._dict)
    seen["query_params"] = None if query is None else (type(query), dict(query))
    return seen


@settings(max_examples=400, deadline=None)
@given(event=events())
def test_the_request_is_the_one_chalice_builds(event: dict[str, Any]) -> None:
    ours, chalices = lowered_request(event), Request(event)
    assert type(ours) is type(chalices)
    assert list(vars(ours)) == list(vars(chalices))  # no attribute more, none less
    assert _seen(ours) == _seen(chalices)
    assert ours.to_dict() == chalices.to_dict()
    assert ours.to_original_event() is event
    assert _raw_body(ours) == _raw_body(chalices)
    for name in event["headers"]:
        assert ours.headers[name.upper()] == chalices.headers[name.upper()]


def _raw_body(request: Request) -> Any:
    """The body as chalice reads it, or the kind of error reading it raises."""
    try:
        return request.raw_body
    except Exception as exc:  # an odd base64 body: both must fail alike
        return type(exc)


def test_its_headers_are_a_copy_and_its_query_a_multidict() -> None:
    event = _event({"x-api-key": "k"}, {"a": ["1", "2"]})
    request = lowered_request(event)
    assert request.headers._dict is not event["headers"]
    assert isinstance(request.headers, CaseInsensitiveMapping)
    assert isinstance(request.query_params, MultiDict)
    assert request.query_params.getlist("a") == ["1", "2"]


def _event(headers: dict[str, str], query: dict[str, list[str]] | None) -> dict[str, Any]:
    return {
        "requestContext": {"httpMethod": "GET", "resourcePath": "/jobs", "path": "/jobs"},
        "headers": headers,
        "pathParameters": {},
        "stageVariables": {},
        "multiValueQueryStringParameters": query,
        "body": None,
    }


def test_the_servers_events_name_every_header_in_lower_case() -> None:
    """What lowered_request counts on: event_for's headers are lower-case, whether they
    come from the server's own reading of the environ or from a caller's mixed case."""
    wsgi = ChaliceWSGI(spool_app.app)
    converter = wsgi.gateway.converter
    match = wsgi.gateway.routes.match_route("/jobs")
    environ = {"HTTP_X_API_KEY": "k", "HTTP_USER_AGENT": "t", "CONTENT_TYPE": "Text/Plain"}
    for headers in (_headers(environ), {"X-Api-Key": "k", "Content-TYPE": "a"}):
        event = converter.event_for("GET", "/jobs", headers, None, match)
        assert all(name == name.lower() for name in event["headers"])

"""app.py's shell: the ApiRequest `_handle` builds from chalice's request.

Stop 40 cut its per-request work (the engine's imports kept after the first request,
the headers handed on as the lower-cased dict chalice keeps instead of its
CaseInsensitiveMapping, no walk of absent multiValueHeaders): the request a route
reads must answer every lookup as before.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from chalice.app import CaseInsensitiveMapping, Request

import app as spool_app
from chalicelib.api import gateway_event
from chalicelib.api import http as api_http

HEADERS = {"X-API-Key": "k-1", "Content-Type": "application/json", "X-Forwarded-For": "1.2.3.4"}


def event(**extra: Any) -> dict[str, Any]:
    """An API Gateway REST event as Lambda hands it: header names as the client sent."""
    return {
        "requestContext": {
            "httpMethod": "POST",
            "resourcePath": "/jobs/{id}/cancel",
            "path": "/api/jobs/j_1/cancel",
            "stage": "api",
            "identity": {"sourceIp": "10.9.8.7"},
        },
        "headers": dict(HEADERS),
        "pathParameters": {"id": "j_1"},
        "stageVariables": None,
        "multiValueQueryStringParameters": {"a": ["1"]},
        "body": '{"x": 1}',
        "path": "/jobs/j_1/cancel",
        **extra,
    }


@pytest.fixture
def handed(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[tuple[str, Any, dict[str, str]]]]:
    """What `_handle` hands routes.handle, recorded."""
    calls: list[tuple[str, Any, dict[str, str]]] = []

    def handle(operation: str, request: Any, **params: str) -> api_http.ApiResponse:
        calls.append((operation, request, params))
        return api_http.ApiResponse(200, "{}", {"Content-Type": "application/json"})

    monkeypatch.setattr(spool_app, "_engine", (api_http, handle))
    monkeypatch.setattr(api_http, "PEER_HEADER_TRUSTED", False)
    yield calls
    spool_app.app.current_request = None


def run(given: dict[str, Any]) -> None:
    spool_app.app.current_request = Request(given)
    response = spool_app.cancel("j_1")
    assert response.status_code == 200
    assert response.headers == {**api_http.API_HEADERS, "Content-Type": "application/json"}


def test_the_route_reads_every_header_as_chalice_s_mapping_answers(
    handed: list[tuple[str, Any, dict[str, str]]],
) -> None:
    run(event())
    operation, request, params = handed[0]
    assert (operation, params) == ("cancel", {"job_id": "j_1"})
    chalice = CaseInsensitiveMapping(HEADERS)
    assert type(request.headers) is dict  # looked up in C, not through Mapping.get
    assert request.headers == dict(chalice.items())
    for name in [*HEADERS, *(n.lower() for n in HEADERS), "X-API-KEY", "missing"]:
        assert request.header(name) == chalice.get(name)
    assert request.body == b'{"x": 1}'
    assert request.query == {"a": "1"}
    assert (request.base_path, request.client) == ("/api", "10.9.8.7")
    assert request.repeated == frozenset()
    assert request.body_error is None


def test_repeated_headers_are_still_read_from_multi_value_headers(
    handed: list[tuple[str, Any, dict[str, str]]],
) -> None:
    run(event(multiValueHeaders={"X-API-Key": ["k-1", "k-2"], "Accept": ["a", "a"]}))
    request = handed[0][1]
    assert request.repeated == frozenset({"x-api-key"})
    with pytest.raises(Exception, match="more than once"):
        request.header("X-Api-Key")


def test_headers_that_are_not_chalice_s_mapping_are_handed_on_as_they_are() -> None:
    mapping = {"x-api-key": "k"}
    assert spool_app._plain(mapping) is mapping
    chalice = CaseInsensitiveMapping({"X-A": "1"})
    assert spool_app._plain(chalice) == {"x-a": "1"}


def test_repeated_headers_leaves_the_callers_dict_as_it_was() -> None:
    """A key line naming two keys ("a, b") is read as its last, as `spool serve` reads
    it: the dict handed on says so, and the caller's (chalice's own, which the
    request keeps) is not rewritten behind its back."""
    given = {"x-api-key": "key-one-0123456789, key-two-0123456789", "accept": "a"}
    before = dict(given)
    repeated, headers = gateway_event.repeated_headers({"multiValueHeaders": None}, given)
    assert given == before
    assert repeated == frozenset({"x-api-key"})
    assert headers["x-api-key"] == "key-two-0123456789"
    assert headers["accept"] == "a"
    same = {"x-api-key": "key-one-0123456789"}
    assert gateway_event.repeated_headers({}, same) == (frozenset(), same)


def test_a_two_key_line_reaches_the_route_as_its_last_key_and_chalice_keeps_it(
    handed: list[tuple[str, Any, dict[str, str]]],
) -> None:
    given = event()
    given["headers"]["X-API-Key"] = "key-one-0123456789,key-two-0123456789"
    request_in = Request(given)
    spool_app.app.current_request = request_in
    spool_app.cancel("j_1")
    request = handed[0][1]
    assert request.repeated == frozenset({"x-api-key"})
    assert request_in.headers["x-api-key"] == "key-one-0123456789,key-two-0123456789"

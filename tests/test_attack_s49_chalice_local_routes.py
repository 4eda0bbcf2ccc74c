"""`chalice local` and a path no route has, or a method Python's server has no
handler for.

Was (stop 49, found by sending the same requests to `spool serve` and `chalice
local`): a path no route matches (`/nope`, `/Jobs`, `/status/`) was chalice's
imitation of API Gateway's default, `403 {"message": "Missing Authentication
Token"}`: a new user who mistyped a path was told of a missing key they had sent.
`spool serve` answers 404 not_found in Spool's error shape, and so does the deployed
API, whose gateway responses (infra/generate.py GATEWAY_ERRORS) replace that
default. And a method Python's http.server has no `do_` handler for (TRACE, or any
other token) was its HTML page `501 Unsupported method`, where `spool serve` answers
405 with Allow in Spool's shape.

Now `chalice local` answers both as the others do.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from infra.generate import GATEWAY_ERRORS
from tests.test_chalice_local import serving_chalice_local

KEY = "s49-routes-key-0123456789"


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tmp_path: Path = tmp_path_factory.mktemp("s49-chalice-local-routes")
    with serving_chalice_local(tmp_path, {**os.environ, "SPOOL_API_KEYS": f"{KEY}=s49"}) as port:
        yield f"http://127.0.0.1:{port}"


def _gateway_no_route(method: str) -> str:
    """The deployed API's message for a path no route has (its gateway response)."""
    status, code, message = GATEWAY_ERRORS["MISSING_AUTHENTICATION_TOKEN"]
    assert (status, code) == (404, "not_found")
    return message.strip('"').replace("$context.httpMethod", method)


@pytest.mark.parametrize(
    "path", ["/nope", "/Jobs", "/status/", "/status", "/jobs//", "/ui/static/"]
)
@pytest.mark.parametrize("method", ["GET", "POST"])
@pytest.mark.parametrize("authorization", [False, True])
def test_a_path_no_route_has_is_404_not_found_in_spool_s_shape(
    base: str, path: str, method: str, authorization: bool
) -> None:
    headers = {"X-API-Key": KEY}
    if authorization:  # chalice answered it with another 403, about AWS signatures
        headers["Authorization"] = "Bearer x"
    answer = requests.request(method, base + path, headers=headers, timeout=10)
    assert answer.status_code == 404, answer.text
    assert answer.json() == {
        "error": {"code": "not_found", "message": _gateway_no_route(method), "details": None}
    }
    assert answer.headers["Content-Type"] == "application/json"
    assert answer.headers["Cache-Control"] == "no-store"
    assert answer.headers["X-Content-Type-Options"] == "nosniff"


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("TRACE", "/jobs", "GET, HEAD"),
        ("CONNECT", "/enqueue", "POST"),
        ("FOO", "/status/j_1", "GET, HEAD"),
    ],
)
def test_a_method_without_a_handler_is_405_with_allow(
    base: str, method: str, path: str, allow: str
) -> None:
    answer = requests.request(method, base + path, headers={"X-API-Key": KEY}, timeout=10)
    assert answer.status_code == 405, answer.text
    assert answer.headers["Allow"] == allow
    assert answer.json()["error"]["code"] == "method_not_allowed"


def test_a_method_that_is_no_token_is_still_refused(base: str) -> None:
    """Python's server refuses a request line it cannot read before any handler."""
    host, port = base.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as conn:
        conn.sendall(b"GE(T /jobs HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        head = conn.recv(65536).split(b"\r\n", 1)[0]
    assert head.split(b" ")[1] in (b"400", b"405", b"501"), head


def test_head_of_a_path_no_route_has_sends_no_body(base: str) -> None:
    """A HEAD answer carries no body: one sent anyway is read as the start of the
    connection's next answer."""
    import http.client

    host, port = base.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        conn.request("HEAD", "/nope", headers={"X-API-Key": KEY})
        head = conn.getresponse()
        head.read()
        assert head.status == 404
        conn.request("GET", "/health")
        after = conn.getresponse()
        assert (after.status, after.read()) == (200, b'{"status":"ok","store":"ok"}')
    finally:
        conn.close()


def test_a_dashboard_path_no_route_has_carries_the_dashboard_s_headers(base: str) -> None:
    """As `spool serve`'s no-route answer under /ui does (its CSP and framing rules)."""
    from chalicelib.api.ui_routes import ERROR_HEADERS

    answer = requests.get(base + "/ui/nope/x", timeout=10)
    assert answer.status_code == 404, answer.text
    for name, value in ERROR_HEADERS.items():
        assert answer.headers[name] == value, name

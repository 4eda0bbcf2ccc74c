"""The refusals `spool serve` makes itself, before the app, carry the dashboard's
security headers under /ui, as every other dashboard answer does.

Was (stop 49, found probing /ui from outside with curl): under /ui every answer of
the app and the server's 404s carry the page's CSP, X-Frame-Options, Referrer-Policy
and Cross-Origin-Opener-Policy (chalicelib/api/ui_routes.py ERROR_HEADERS; on Lambda
a refusal made before chalice carries them too), but the server's own refusals (400
for a control character or a lower-case method, 408, 413 for a body over the limit,
431 for a head over the limit) had only no-store and nosniff: an answer of the
dashboard's origin that could be framed and that set no policy. A 413 under
/ui/api/dead/purge, say. Now they carry the dashboard's headers too; refusals
elsewhere keep the API's (no-store, nosniff) as before. The same under `chalice
local`, whose refusals before chalice (413, a target that is not ASCII, a
request line or head http.server cannot read) had only the API's headers too.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from chalicelib.api.ui_routes import ERROR_HEADERS
from tests.apikit import installed, settings_for
from tests.test_chalice_local import serving_chalice_local
from tests.test_server_abuse import LIMIT, parse, read_until_closed, serving

UI_REFUSALS = {
    "control": b"GET /ui HTTP/1.1\r\nHost: x\r\nX: \x01\r\n\r\n",
    "method": b"get /ui/api/jobs HTTP/1.1\r\nHost: x\r\n\r\n",
    "413": b"POST /ui/api/dead/purge HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999\r\n\r\n",
    "431": b"GET /ui HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20_000 + b"\r\n\r\n",
    "408": b"POST /ui/api/dead/purge HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{",
}
API_REFUSALS = {
    "413": b"POST /enqueue HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999\r\n\r\n",
    "408": b"POST /enqueue HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{",
}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, int]]:
    folder: Path = tmp_path_factory.mktemp("ui-refusals")
    with (
        installed(settings_for(folder, max_body_bytes=LIMIT)) as rt,
        serving(rt, "threads", request_timeout=1.0, linger_seconds=5.0) as running,
    ):
        yield running.host, running.port


def refused(server: tuple[str, int], head: bytes) -> tuple[int, dict[str, str]]:
    with socket.create_connection(server, timeout=10) as sock:
        sock.sendall(head)
        sock.settimeout(30)
        status, headers, body = parse(read_until_closed(sock))
    assert status >= 400 and json.loads(body)["error"]["code"], (status, body)
    return status, headers


@pytest.mark.parametrize("head", UI_REFUSALS.values(), ids=UI_REFUSALS.keys())
def test_the_server_s_own_refusals_under_ui_carry_the_dashboard_s_headers(
    server: tuple[str, int], head: bytes
) -> None:
    status, headers = refused(server, head)
    for name, value in ERROR_HEADERS.items():
        assert headers.get(name.lower()) == value, (status, name, headers)


@pytest.mark.parametrize("head", API_REFUSALS.values(), ids=API_REFUSALS.keys())
def test_refusals_elsewhere_keep_the_api_s_headers(server: tuple[str, int], head: bytes) -> None:
    status, headers = refused(server, head)
    assert headers["cache-control"] == "no-store" and headers["x-content-type-options"] == "nosniff"
    assert "content-security-policy" not in headers, (status, headers)


# -- `chalice local`: its own refusals, made before chalice routes the request -------------

CHALICE_UI_REFUSALS = {
    "413": b"POST /ui/api/dead/purge HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999\r\n\r\n",
    "non-ascii": b"GET /ui/api/jobs?find=caf\xc3\xa9 HTTP/1.1\r\nHost: x\r\n\r\n",
    "line": b"GET /ui HTTP/1.1 x\r\nHost: x\r\n\r\n",
    "headers": b"GET /ui HTTP/1.1\r\nHost: x\r\n" + b"X: y\r\n" * 200 + b"\r\n",
}


@pytest.fixture(scope="module")
def chalice_port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    folder: Path = tmp_path_factory.mktemp("ui-refusals-chalice")
    env = {**os.environ, "SPOOL_API_KEYS": "s49c-key-0123456789=s49c"}
    with serving_chalice_local(folder, env) as port:
        yield port


@pytest.mark.parametrize("head", CHALICE_UI_REFUSALS.values(), ids=CHALICE_UI_REFUSALS.keys())
def test_chalice_local_s_own_refusals_under_ui_carry_the_dashboard_s_headers(
    chalice_port: int, head: bytes
) -> None:
    status, headers = refused(("127.0.0.1", chalice_port), head)
    for name, value in ERROR_HEADERS.items():
        assert headers.get(name.lower()) == value, (status, name, headers)


def test_chalice_local_s_refusals_elsewhere_keep_the_api_s_headers(chalice_port: int) -> None:
    head = b"POST /enqueue HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999\r\n\r\n"
    status, headers = refused(("127.0.0.1", chalice_port), head)
    assert headers["cache-control"] == "no-store" and headers["x-content-type-options"] == "nosniff"
    assert "content-security-policy" not in headers, (status, headers)

"""`chalice local` and a request line and headers over `spool serve`'s head limit.

Was (stop 49, found by sending one long id to both servers): `spool serve` stops the
request line and headers at SPOOL_HTTP_MAX_HEADER_BYTES (16 KiB by default,
local/http_limits.py), answering 431 headers_too_large that says to shorten the URL
or the headers (local/http_guard.py render_error). `chalice local` read a request
line of up to 64 KiB, and any number of header bytes up to 100 lines of 64 KiB: a
20 KiB id was served (404 job not found) and a 70 KiB one was 414 bad_request.

Now `chalice local` applies the same limit, read from the same setting, with the same
answer: 431, the same code, message and details.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from typing import Any

import pytest

from chalicelib.api.http import head_too_large
from tests.apikit import KEY_A
from tests.edge_servers import chalice_local_port, spool_serve_port

LIMIT = 16 * 1024


@pytest.fixture(scope="module")
def local_port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    with chalice_local_port(tmp_path_factory.mktemp("s49d-chalice-local-head")) as port:
        yield port


@pytest.fixture(scope="module")
def served_port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    with spool_serve_port(tmp_path_factory.mktemp("s49d-served-head")) as port:
        yield port


def _exchange(port: int, target: str, extra: tuple[str, ...] = ()) -> tuple[int, Any]:
    lines = [f"GET {target} HTTP/1.1", "Host: x", f"X-API-Key: {KEY_A}", *extra]
    raw = ("\r\n".join([*lines, "Connection: close"]) + "\r\n\r\n").encode()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(raw)
        chunks = []
        while chunk := conn.recv(65536):
            chunks.append(chunk)
    head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), json.loads(body)


REFUSED = {
    "error": {
        "code": "headers_too_large",
        "message": head_too_large(LIMIT),
        "details": {"limit": LIMIT},
    }
}
OVER = [
    ("long-id", "/status/j_" + "a" * 20_000, ()),
    ("long-query", "/jobs?queue=" + "q" * 20_000, ()),
    ("past-http-server-s-line", "/status/" + "a" * 70_000, ()),
    ("many-headers", "/health", tuple(f"X-Pad-{n}: {'p' * 400}" for n in range(60))),
    ("one-long-header", "/health", (f"X-Pad: {'p' * 17_000}",)),
]


@pytest.mark.parametrize(("target", "extra"), [o[1:] for o in OVER], ids=[o[0] for o in OVER])
def test_a_head_over_the_limit_is_431_on_chalice_local_as_on_spool_serve(
    local_port: int, served_port: int, target: str, extra: tuple[str, ...]
) -> None:
    assert _exchange(served_port, target, extra) == (431, REFUSED)
    assert _exchange(local_port, target, extra) == (431, REFUSED)


def test_a_head_under_the_limit_is_served_on_both(local_port: int, served_port: int) -> None:
    target = "/status/j_" + "a" * 8_000
    for port in (served_port, local_port):
        status, body = _exchange(port, target, ("X-Pad: " + "p" * 4_000,))
        assert (status, body["error"]["code"]) == (404, "not_found")


def test_a_refused_line_is_logged_by_its_start_only(local_port: int) -> None:
    """The 431's log line showed the whole request line (20 KiB here, up to 1 MiB with
    the setting raised): a few such requests wrote more than a pipe holds to a
    stderr read by a slower reader, and the server stopped answering until it was
    read (found when this module's server, whose stderr the test leaves unread,
    hung). It shows the first MAX_SHOWN_PATH characters, as a no-route answer does."""
    for _ in range(6):
        assert _exchange(local_port, "/status/j_" + "a" * 20_000)[0] == 431
    assert _exchange(local_port, "/health")[0] == 200

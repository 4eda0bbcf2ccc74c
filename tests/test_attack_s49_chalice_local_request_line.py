"""`chalice local` and a request line its server reads otherwise than `spool serve`.

Was (stop 49, found by sending the same raw requests to both):

- bytes that are not ASCII in the request target (what curl sends for
  `curl 'localhost:8000/ui/api/jobs?find=café'`) were read by Python's http.server as
  latin-1: the dashboard searched for "cafÃ©" and answered 200 with no job, and
  `/status/café` was "job not found" for "cafÃ©". `spool serve` refuses such a
  target 400 saying to percent-encode it (local/http_messages.py);
- a request line http.server cannot read (`GET /jobs HTTP/1.1 x`, `HTTP/2.0`, a
  line over 64 KiB) was its HTML error page, where every other answer is JSON in
  Spool's shape.

Now both are answered as `spool serve` answers them: the first in its words, the
others in Spool's shape, with the status http.server chose.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from chalicelib.api.http import NON_ASCII_TARGET
from local.http_messages import explain
from tests.test_chalice_local import serving_chalice_local

KEY = "s49-line-key-0123456789"


@pytest.fixture(scope="module")
def port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    tmp_path: Path = tmp_path_factory.mktemp("s49-chalice-local-line")
    with serving_chalice_local(tmp_path, {**os.environ, "SPOOL_API_KEYS": f"{KEY}=s49"}) as port:
        yield port


def _exchange(port: int, line: bytes) -> tuple[int, bytes, object]:
    """The status, head and decoded JSON body of the answer to `line` and a minimal head."""
    raw = line + b"\r\nHost: x\r\nX-API-Key: " + KEY.encode() + b"\r\nConnection: close\r\n\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(raw)
        chunks = []
        while chunk := conn.recv(65536):
            chunks.append(chunk)
    head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), head, json.loads(body)


def test_spool_serve_says_what_chalice_local_now_says() -> None:
    """One text for both: `spool serve` explains waitress's "Bad URI" with it."""
    assert explain("Bad URI") == NON_ASCII_TARGET


@pytest.mark.parametrize(
    "target",
    [
        "/ui/api/jobs?find=café",
        "/jobs?queue=café",
        "/status/café",
        "/caf\u00e9",
    ],
)
def test_a_target_holding_bytes_that_are_not_ascii_is_400_saying_to_percent_encode(
    port: int, target: str
) -> None:
    status, _, body = _exchange(port, b"GET " + target.encode() + b" HTTP/1.1")
    assert (status, body) == (
        400,
        {"error": {"code": "bad_request", "message": NON_ASCII_TARGET, "details": None}},
    )


def test_the_same_target_percent_encoded_is_served(port: int) -> None:
    status, _, body = _exchange(port, b"GET /ui/api/jobs?find=caf%C3%A9 HTTP/1.1")
    assert (status, body) == (200, {"jobs": [], "next_cursor": None})


@pytest.mark.parametrize(
    ("line", "status"),
    [
        (b"GET /jobs HTTP/1.1 x", 400),
        (b"GET /jobs HTTP/2.0", 505),
        (b"GET /jobs HTTQ/1.1", 400),
        # Over `spool serve`'s head limit too: its 431 (test_attack_s49d_*_head_limit.py).
        (b"GET /" + b"a" * 70000 + b" HTTP/1.1", 431),
    ],
    ids=["extra-word", "http2", "bad-version", "long-line"],
)
def test_a_request_line_http_server_cannot_read_is_answered_in_spool_s_shape(
    port: int, line: bytes, status: int
) -> None:
    got, head, body = _exchange(port, line)
    assert got == status
    assert b"Content-Type: application/json" in head
    assert isinstance(body, dict)
    assert body["error"]["code"] == ("headers_too_large" if status == 431 else "bad_request")
    assert body["error"]["message"]

"""`chalice local` and a request line `spool serve`'s server refuses.

Was (stop 49, found by sending the same raw request lines to both servers): Python's
http.server splits the request line on any run of blanks and takes any method
token, so `GET  /health HTTP/1.1` (two spaces: what a client that puts an unencoded
space first in a path sends) was served 200, and `get /health` was 405
method_not_allowed. `spool serve`'s server (waitress) reads the line as
`METHOD SP target SP HTTP/x.y` and refuses the first 400 saying a space in a path
must be percent-encoded, and a method not in upper case 400 saying methods are
case-sensitive.

Now `chalice local` reads the line as `spool serve` does, with the same answers.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from typing import Any

import pytest

from tests.apikit import KEY_A
from tests.edge_servers import chalice_local_port, spool_serve_port


@pytest.fixture(scope="module")
def local_port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    with chalice_local_port(tmp_path_factory.mktemp("s49d-chalice-local-line")) as port:
        yield port


@pytest.fixture(scope="module")
def served_port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    with spool_serve_port(tmp_path_factory.mktemp("s49d-served-line")) as port:
        yield port


def _exchange(port: int, line: bytes) -> tuple[int, Any]:
    head = b"\r\nHost: x\r\nX-API-Key: " + KEY_A.encode() + b"\r\nConnection: close\r\n\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(line + head)
        chunks = []
        while chunk := conn.recv(65536):
            chunks.append(chunk)
    answer, _, body = b"".join(chunks).partition(b"\r\n\r\n")
    return int(answer.split(b" ", 2)[1]), json.loads(body)


REFUSED = [
    b"GET  /health HTTP/1.1",
    b"GET /health  HTTP/1.1",
    b"GET /status/a b HTTP/1.1",
    b"get /health HTTP/1.1",
    b"Get /jobs HTTP/1.1",
    b"post /enqueue HTTP/1.1",
]
SERVED = [b"GET /health HTTP/1.1", b"GET /health HTTP/1.0", b"PURGE /health HTTP/1.1"]


@pytest.mark.parametrize("line", REFUSED)
def test_a_line_spool_serve_refuses_is_refused_alike(
    local_port: int, served_port: int, line: bytes
) -> None:
    want = _exchange(served_port, line)
    assert want[0] == 400
    assert _exchange(local_port, line) == want


@pytest.mark.parametrize("line", SERVED)
def test_a_line_spool_serve_reads_is_read_alike(
    local_port: int, served_port: int, line: bytes
) -> None:
    assert _exchange(local_port, line) == _exchange(served_port, line)

"""`spool serve` reads a request of HTTP/1.2 .. HTTP/1.9 as HTTP/1.1 (s56, helper J).

waitress serves every version but 1.1 as 1.0: `HTTP/1.2` got no keep-alive (each answer
closed the connection), a chunked body was refused as "Transfer-Encoding needs HTTP/1.1",
and a request without Host was served. RFC 9110 2.5 / RFC 9112 2.3: a recipient of a
higher minor version of a major it speaks treats it as the highest minor it speaks, so
such a request is HTTP/1.1 in all three: kept alive by default, chunked allowed, Host
required. The answer's status line says HTTP/1.1 (the server's own version).

Real requests over a socket to `spool serve`'s server.
"""

from __future__ import annotations

import json
import socket

import pytest

from local.server import Server
from tests.apikit import KEY_A
from tests.served import exchange

MINORS = ["HTTP/1.2", "HTTP/1.9"]


def read_answer(sock: socket.socket, pending: bytes) -> tuple[bytes, dict[str, str], bytes, bytes]:
    """One answer off the socket: its status line, headers, body, and what follows it."""
    while b"\r\n\r\n" not in pending:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed before an answer: {pending!r}"
        pending += chunk
    head, _, rest = pending.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0"))
    while len(rest) < length:
        chunk = sock.recv(65536)
        assert chunk, "connection closed inside a body"
        rest += chunk
    return lines[0], headers, rest[:length], rest[length:]


def jobs(server: Server) -> list[object]:
    head = f"GET /jobs HTTP/1.1\r\nHost: x\r\nX-API-Key: {KEY_A}\r\nConnection: close\r\n\r\n"
    status, answer = exchange(server, head.encode())
    assert status == 200
    return list(answer["jobs"])


@pytest.mark.parametrize("version", MINORS)
def test_a_higher_minor_is_kept_alive_by_default(server: Server, version: str) -> None:
    request = f"GET /health {version}\r\nHost: x\r\n\r\n".encode()
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(request)
        status_line, headers, _, rest = read_answer(sock, b"")
        assert status_line.startswith(b"HTTP/1.1 200"), status_line
        assert headers.get("connection", "").lower() != "close", headers
        sock.sendall(request)  # the same connection serves a second request
        status_line, _, body, _ = read_answer(sock, rest)
        assert status_line.startswith(b"HTTP/1.1 200"), status_line
        assert json.loads(body)


@pytest.mark.parametrize("version", MINORS)
def test_a_higher_minor_may_send_a_chunked_body(server: Server, version: str) -> None:
    body = b'{"type": "echo"}'
    chunked = f"{len(body):x}\r\n".encode() + body + b"\r\n0\r\n\r\n"
    head = (
        f"POST /enqueue {version}\r\nHost: x\r\nX-API-Key: {KEY_A}\r\n"
        "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n"
        "Connection: close\r\n\r\n"
    ).encode()
    status, answer = exchange(server, head + chunked)
    assert status == 201, answer
    assert len(jobs(server)) == 1


@pytest.mark.parametrize("version", MINORS)
def test_a_higher_minor_needs_a_host_as_http_1_1_does(server: Server, version: str) -> None:
    body = b'{"type": "echo"}'
    head = (
        f"POST /enqueue {version}\r\nX-API-Key: {KEY_A}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    ).encode()
    status, answer = exchange(server, head + body)
    assert status == 400, answer
    assert "Host" in answer["error"]["message"]
    assert jobs(server) == []


def test_http_1_0_stays_http_1_0(server: Server) -> None:
    """No Host needed, and the answer closes the connection unless asked to keep it."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(b"GET /health HTTP/1.0\r\n\r\n")
        status_line, _, _, _ = read_answer(sock, b"")
        assert status_line.startswith(b"HTTP/1.0 200"), status_line
        assert sock.recv(1) == b""  # closed after the answer


def refused_heads(version: str) -> list[bytes]:
    """Heads refused before waitress reads their request line: a Transfer-Encoding
    other than chunked alone, a folded line, a head over the size limit."""
    start = f"POST /enqueue {version}\r\nHost: x\r\nX-API-Key: {KEY_A}\r\n"
    return [
        (start + "Transfer-Encoding: chunked, identity\r\n\r\n").encode(),
        (start + "X-A: 1\r\n  folded\r\nContent-Length: 0\r\n\r\n").encode(),
        (start + f"X-Big: {'a' * 100_000}\r\nContent-Length: 0\r\n\r\n").encode(),
    ]


@pytest.mark.parametrize(
    ("version", "answered"),
    [("HTTP/1.1", b"HTTP/1.1 "), ("HTTP/1.3", b"HTTP/1.1 "), ("HTTP/1.0", b"HTTP/1.0 ")],
)
def test_a_refused_head_is_answered_in_the_clients_version(
    server: Server, version: str, answered: bytes
) -> None:
    """RFC 9110 6.2: the answer's version is the highest the server speaks of the
    request's major. These refusals answered an HTTP/1.1 client as HTTP/1.0."""
    for head in refused_heads(version):
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
            sock.sendall(head)
            status_line, _, body, _ = read_answer(sock, b"")
        assert status_line.startswith(answered), (head[:60], status_line)
        assert status_line.split(b" ")[1] in (b"400", b"431"), status_line
        assert json.loads(body)["error"]["message"]

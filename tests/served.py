"""A real `spool serve` HTTP server in this process on a free 127.0.0.1 port, and a
raw exchange over a socket with it: for tests of what a client sends byte for byte."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import app as spool_app
from local.http_limits import HttpLimits
from local.server import ChaliceWSGI, Server
from tests.apikit import KEY_A, installed, settings_for


@contextmanager
def served(tmp_path: Path, **settings: Any) -> Iterator[Server]:
    """app.py behind `spool serve`'s server (no worker), on the settings tests use."""
    with installed(settings_for(tmp_path, demo_handlers=True, **settings)):
        running = Server(
            ChaliceWSGI(spool_app.app),
            "127.0.0.1",
            0,
            threads=4,
            limits=HttpLimits(request_timeout=5.0, linger_seconds=1.0),
        )
        running.start()
        try:
            yield running
        finally:
            running.stop()


def exchange(server: Server, data: bytes) -> tuple[int, Any]:
    """Send `data` on a new connection (it should ask to close); the answer's status
    and its JSON body."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(data)
        received = b""
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    return status, json.loads(body)


def post(
    server: Server, path: str, body: bytes, content_type: str = "application/json"
) -> tuple[int, dict[str, Any]]:
    """POST `body` to `path` with tenant A's key and `content_type`: the answer's status
    and its JSON object."""
    head = (
        f"POST {path} HTTP/1.1\r\nHost: x\r\nX-API-Key: {KEY_A}\r\n"
        f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    ).encode()
    status, answer = exchange(server, head + body)
    assert isinstance(answer, dict)
    return status, answer

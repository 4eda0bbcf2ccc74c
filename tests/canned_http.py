"""A loopback socket that answers every request with the same bytes, whatever they are:
how the client and the webhook tests meet a server that says what no real server would."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Callable
from typing import Any


def json_answer(data: Any) -> bytes:
    """A whole 200 answer carrying `data` as JSON, the connection closed after it."""
    body = json.dumps(data).encode()
    return (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
        + str(len(body)).encode()
        + b"\r\nConnection: close\r\n\r\n"
        + body
    )


def read_head(conn: socket.socket) -> bytes | None:
    """A request's head, read up to its blank line; None if the client left before it."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            return None
        data += chunk
    return data


def serve_each(sock: socket.socket, handle: Callable[[socket.socket], None]) -> None:
    """Accept connections on `sock` until it is closed, each handled by `handle` on a
    thread of its own: a server that stalls one client must not hold up the next."""

    def accept() -> None:
        while True:
            try:
                conn, _ = sock.accept()
            except OSError:
                return
            threading.Thread(target=handle, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()


class CannedServer:
    """Reads each request's head, then writes exactly `answer`; one connection at a time.
    `url` ends in `path`; `requests` counts the heads read."""

    def __init__(self, answer: bytes, path: str = "") -> None:
        self.answer = answer
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}{path}"
        self.requests = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                try:
                    conn.settimeout(5)
                    read_head(conn)
                    self.requests += 1
                    conn.sendall(self.answer)
                except OSError:  # the client left before the whole answer was read
                    pass

    def close(self) -> None:
        self.sock.close()

"""A webhook receiver on a loopback socket for the webhook tests.

It records every request (headers, raw body, when), and answers as the test
tells it: a status, "down" (the port refuses connections), or "hang" (reads the
request, then holds it without answering until released), so a test can play a
receiver that fails, recovers or stalls mid-delivery.
"""

from __future__ import annotations

import http.server
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes
    path: str
    at: float = field(default_factory=time.monotonic)


class Receiver:
    def __init__(self) -> None:
        self.requests: list[Received] = []
        self.status = 204
        self.hang = threading.Event()  # set: hold each request unanswered until released
        self.released = threading.Event()
        self.arrived = threading.Condition()
        self._server: http.server.ThreadingHTTPServer | None = None
        self.port = _free_port()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks"

    def up(self) -> Receiver:
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                got = Received({k.lower(): v for k, v in self.headers.items()}, body, self.path)
                with receiver.arrived:
                    receiver.requests.append(got)
                    receiver.arrived.notify_all()
                if receiver.hang.is_set():
                    receiver.released.wait(60)
                    return  # closes without an answer
                self.send_response(receiver.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._server = _Server(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def down(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def wait_for(self, predicate: Callable[[list[Received]], bool], timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        with self.arrived:
            while not predicate(self.requests):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"receiver waited {timeout}s; got {self.requests}")
                self.arrived.wait(left)


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 64  # the default 5 drops connections under parallel deliveries


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])

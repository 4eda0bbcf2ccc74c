"""A loopback HTTP server that gives every request the same answer: a broken or hostile
Spool server for the client's tests (the tests/test_attack_s50d_* files)."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class CannedServer:
    """Answers every GET and POST with `status`, `answer` as JSON and `headers`; a
    request's body is read first, so closing never resets the connection. `paths`:
    the path of each request, in the order they came. `answer` may instead be a
    function of the request's path (a server whose pages lead somewhere)."""

    def __init__(self, status: int, answer: Any, headers: Mapping[str, str] | None = None) -> None:
        answer_for: Callable[[str], Any] = answer if callable(answer) else lambda _path: answer
        extra = dict(headers or {})
        self.paths: list[str] = []
        paths = self.paths

        class Handler(BaseHTTPRequestHandler):
            def _reply(self) -> None:
                paths.append(self.path)
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                body = json.dumps(answer_for(self.path)).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                for name, value in extra.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = _reply

            def log_message(self, *args: object) -> None:
                return None

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.http.server_address[1]}"
        threading.Thread(target=self.http.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.http.shutdown()
        self.http.server_close()


Start = Callable[..., str]


@contextmanager
def canned_servers() -> Iterator[Start]:
    """start(status, answer, headers=None) -> the URL of a new CannedServer; each is
    closed on leaving."""
    made: list[CannedServer] = []

    def start(status: int, answer: Any, headers: Mapping[str, str] | None = None) -> str:
        made.append(CannedServer(status, answer, headers))
        return made[-1].url

    try:
        yield start
    finally:
        for server in made:
            server.close()

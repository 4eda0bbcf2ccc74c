"""The worker's scrape port: one tiny threaded HTTP server answering GET /metrics.

Its own module so `spool worker` without --metrics-port never imports http.server
(start-up to the first job is paid on every deploy and scale-out).

http.server alone waits for a request forever and starts a thread per connection
without limit: 200 connections that sent nothing held 200 of the worker's threads
for as long as they stayed open. So the whole request must arrive within
`request_timeout` seconds of the connection (a timeout on each read was not enough:
a client sending a byte at a time, each just inside it, held its thread for days),
its answer's write gives up after as long, and past `max_connections` open at once a
new connection is closed unanswered, with no thread: a scrape is one short request,
and Prometheus opens one connection per target.

Bound to a loopback address (the default), the port answers only requests whose Host
names an address or localhost (chalicelib/local_hosts.py): a web page the developer
opens can reach 127.0.0.1 by DNS rebinding (its own name answered with 127.0.0.1), and
its `fetch("/metrics")` was served as same-origin, every tenant's queue names with it.
Such a request names the page's site in its Host header; a local scraper never does.
"""

from __future__ import annotations

import http.server
import io
import logging
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from chalicelib import logs
from chalicelib.local_hosts import local_host_only, serves_host
from chalicelib.redact import redact_text

log = logging.getLogger("spool.worker_metrics")

METRICS_PATH = "/metrics"
REQUEST_TIMEOUT = 10.0  # seconds a socket read or write may wait: a scrape takes milliseconds
MAX_CONNECTIONS = 16  # open at once; Prometheus keeps one per target


NOT_THIS_SITE = (
    b"forbidden: this port serves metrics to this machine's scrapers, which name it by "
    b"address or as localhost; the Host header named another site (a web page reaching "
    b"127.0.0.1 by DNS rebinding). Bind --metrics-host beyond loopback to scrape it by "
    b"another name.\n"
)


class _DeadlineReader(socket.SocketIO):
    """The connection's reads, each given only what is left of the request's time, so
    the request as a whole is bounded, not each read (BaseHTTPRequestHandler ends the
    connection on the TimeoutError)."""

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        super().__init__(sock, "rb")
        self._deadline = deadline

    def readinto(self, b: Any) -> int | None:
        left = self._deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("the request did not arrive in time")
        self._sock.settimeout(left)  # type: ignore[attr-defined]
        return super().readinto(b)


class _Handler(http.server.BaseHTTPRequestHandler):
    """GET (or HEAD) /metrics and nothing else; the exposition comes from the server."""

    server: MetricsServer
    server_version = "spool-worker-metrics"
    _head_only = False  # this request is a HEAD (do_HEAD): headers, no body

    def setup(self) -> None:
        """The request must arrive within the server's timeout of the connection, and
        the answer's write gets as long."""
        super().setup()
        timeout = self.server.request_timeout
        self.connection.settimeout(timeout)
        reader = _DeadlineReader(self.connection, time.monotonic() + timeout)
        self.rfile.close()  # StreamRequestHandler's, replaced before any read
        self.rfile = io.BufferedReader(reader)

    def do_GET(self) -> None:
        if not serves_host(self.headers.get("Host"), self.server.local_only):
            self._reply(403, NOT_THIS_SITE)
            return
        if self.path.split("?", 1)[0] != METRICS_PATH:
            self._reply(404, b"not found: metrics are at /metrics\n")
            return
        try:
            body = self.server.exposition()
        except Exception as exc:  # the store being down is a failed scrape, not a crash
            log.warning("metrics scrape failed: %s", redact_text(str(exc)))
            self._reply(503, f"reading the store failed: {type(exc).__name__}\n".encode())
            return
        self._reply(200, body, self.server.content_type)

    def do_HEAD(self) -> None:
        """GET's status and headers, no body: a probe's HEAD was 501, a broken target."""
        self._head_only = True
        self.do_GET()

    def do_POST(self) -> None:
        self._reply(405, b"method not allowed: GET (or HEAD) /metrics\n")

    do_PUT = do_DELETE = do_PATCH = do_POST

    def _reply(self, status: int, body: bytes, content_type: str = "text/plain") -> None:
        self.connection.settimeout(self.server.request_timeout)  # reads left it shorter
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        if status == 405:
            self.send_header("Allow", "GET, HEAD")
        self.end_headers()
        if not self._head_only:
            self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        """Scrapes every few seconds would drown the worker's log."""


class MetricsServer(http.server.ThreadingHTTPServer):
    """A tiny threaded HTTP server for one exposition; stops with the worker."""

    daemon_threads = True

    def __init__(
        self,
        host: str,
        port: int,
        exposition: Callable[[], bytes],
        content_type: str,
        request_timeout: float = REQUEST_TIMEOUT,
        max_connections: int = MAX_CONNECTIONS,
    ) -> None:
        super().__init__((host, port), _Handler)
        self.exposition = exposition
        self.content_type = content_type
        self.request_timeout = request_timeout
        self.max_connections = max_connections
        self._slots = threading.BoundedSemaphore(max_connections)
        self._thread: threading.Thread | None = None
        # Loopback: only this machine connects, so only local names are answered.
        self.local_only = local_host_only(host)

    def process_request(self, request: Any, client_address: Any) -> None:
        """A thread for the connection if one of `max_connections` slots is free; else
        the connection is closed at once (the client sees end-of-file, no thread)."""
        if not self._slots.acquire(blocking=False):
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:  # no thread started: nothing else frees the slot
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        """A scrape's thread (socketserver starts one a request): not an invocation's."""
        try:
            logs.not_in_invocation()
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        shown = f"[{host!s}]" if ":" in str(host) else str(host)
        return f"http://{shown}:{port}{METRICS_PATH}"

    def start(self) -> None:
        self._thread = logs.outside_thread(self.serve_forever, name="spool-metrics")
        self._thread.start()

    def stop(self) -> None:
        if self._thread is not None:
            self.shutdown()
            self._thread.join(5)
        self.server_close()

"""The worker's scrape port: one tiny threaded HTTP server answering GET /metrics.

Its own module so `spool worker` without --metrics-port never imports http.server
(start-up to the first job is paid on every deploy and scale-out).
"""

from __future__ import annotations

import http.server
import logging
import threading
from collections.abc import Callable
from typing import Any

from chalicelib import logs
from chalicelib.redact import redact_text

log = logging.getLogger("spool.worker_metrics")

METRICS_PATH = "/metrics"


class _Handler(http.server.BaseHTTPRequestHandler):
    """GET /metrics and nothing else; the exposition comes from the server."""

    server: MetricsServer
    server_version = "spool-worker-metrics"

    def do_GET(self) -> None:
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

    def do_POST(self) -> None:
        self._reply(405, b"method not allowed: GET /metrics\n")

    do_PUT = do_DELETE = do_PATCH = do_POST

    def _reply(self, status: int, body: bytes, content_type: str = "text/plain") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        if status == 405:
            self.send_header("Allow", "GET")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        """Scrapes every few seconds would drown the worker's log."""


class MetricsServer(http.server.ThreadingHTTPServer):
    """A tiny threaded HTTP server for one exposition; stops with the worker."""

    daemon_threads = True

    def __init__(
        self, host: str, port: int, exposition: Callable[[], bytes], content_type: str
    ) -> None:
        super().__init__((host, port), _Handler)
        self.exposition = exposition
        self.content_type = content_type
        self._thread: threading.Thread | None = None

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        """A scrape's thread (socketserver starts one a request): not an invocation's."""
        logs.not_in_invocation()
        super().process_request_thread(request, client_address)

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

"""SPOOL_PUSHGATEWAY_URL with credentials (http://user:password@gateway:9091, a gateway
behind basic auth): every push failed with "Name or service not known", because
urllib took "user:password@gateway" for the host name and asked the resolver for it,
password and all. Now the credentials go in an Authorization header to the gateway
named, and no log line carries the password. A real gateway on loopback."""

from __future__ import annotations

import base64
import http.server
import logging
import threading
from collections.abc import Iterator

import pytest

from chalicelib.api.metrics import Metrics
from chalicelib.clock import FakeClock
from chalicelib.config import Settings
from chalicelib.storage.memory import MemoryStore

USER, PASSWORD = "spool", "s3cret-pw-0123"


class _Guarded(http.server.BaseHTTPRequestHandler):
    """A gateway that takes a push only with USER:PASSWORD (202), else 401."""

    status_without = 401
    seen: list[str | None] = []

    def do_PUT(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        given = self.headers.get("Authorization")
        _Guarded.seen.append(given)
        want = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
        self.send_response(202 if given == want else self.status_without)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def gateway() -> Iterator[int]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Guarded)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    _Guarded.seen = []
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def test_a_push_to_a_url_with_credentials_authenticates(gateway: int) -> None:
    metrics = Metrics(MemoryStore(FakeClock()), Settings())
    assert metrics.push(f"http://{USER}:{PASSWORD}@127.0.0.1:{gateway}", timeout=5) is True
    assert _Guarded.seen and _Guarded.seen[-1] is not None


def test_a_failed_push_logs_no_password(gateway: int, caplog: pytest.LogCaptureFixture) -> None:
    metrics = Metrics(MemoryStore(FakeClock()), Settings())
    url = f"http://{USER}:wrong-{PASSWORD}@127.0.0.1:{gateway}"
    with caplog.at_level(logging.WARNING, logger="spool"):
        assert metrics.push(url, timeout=5) is False
    said = [r.getMessage() for r in caplog.records]
    assert said and all(PASSWORD not in line for line in said)
    assert any(f"127.0.0.1:{gateway}" in line and "401" in line for line in said)


def test_the_scraped_and_pushed_warning_masks_the_password(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The start-up line naming the gateway (a process both scraped and pushing) shows
    the URL as the push's own lines do, masked where it is written, not only by the
    log handler Spool installs."""
    from local.worker_metrics import warn_scraped_and_pushed

    with caplog.at_level(logging.WARNING, logger="spool"):
        warn_scraped_and_pushed(f"http://{USER}:{PASSWORD}@gateway:9091", "the metrics port")
    said = [r.getMessage() for r in caplog.records]
    assert said and all(PASSWORD not in line for line in said)
    assert any(f"http://{USER}:" in line and "@gateway:9091" in line for line in said)


def test_the_gateway_password_is_masked_by_value_in_every_log_line() -> None:
    """As the store URL's password is: whatever later quotes it (an exception's text
    that is no URL) writes *** instead."""
    from chalicelib.log_redact import secrets_in

    settings = Settings(pushgateway_url=f"http://{USER}:{PASSWORD}@gateway:9091")
    assert PASSWORD in secrets_in(settings)


def test_a_redirecting_gateway_gets_the_credentials_sent_nowhere_else() -> None:
    """A gateway that answers 307 to another host: the push fails and the other host
    is never asked (urllib follows no redirect of a PUT), so the basic-auth pair
    stays with the gateway named."""
    asked: list[str | None] = []

    class Elsewhere(http.server.BaseHTTPRequestHandler):
        def do_PUT(self) -> None:
            asked.append(self.headers.get("Authorization"))
            self.send_response(202)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    other = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Elsewhere)
    threading.Thread(target=other.serve_forever, daemon=True).start()
    there = f"http://127.0.0.1:{other.server_address[1]}/metrics"

    class Redirecting(http.server.BaseHTTPRequestHandler):
        def do_PUT(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            self.send_response(307)
            self.send_header("Location", there)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    gateway = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Redirecting)
    threading.Thread(target=gateway.serve_forever, daemon=True).start()
    try:
        metrics = Metrics(MemoryStore(FakeClock()), Settings())
        url = f"http://{USER}:{PASSWORD}@127.0.0.1:{gateway.server_address[1]}"
        assert metrics.push(url, timeout=5) is False
        assert asked == []
    finally:
        for server in (gateway, other):
            server.shutdown()
            server.server_close()

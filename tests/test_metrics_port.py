"""The worker's scrape port (local/metrics_http.py) against clients that connect and
then hold the connection: each held a thread of the worker forever, without bound."""

from __future__ import annotations

import socket
import time
import urllib.request
from collections.abc import Callable, Iterator

import pytest

from local.metrics_http import MetricsServer

GUARD = 10.0  # seconds a test waits for what should happen at once, before failing


def _exposition() -> bytes:
    return b"# HELP up x\n# TYPE up gauge\nup 1\n"


@pytest.fixture
def server(request: pytest.FixtureRequest) -> Iterator[MetricsServer]:
    options = getattr(request, "param", {})
    served = MetricsServer("127.0.0.1", 0, _exposition, "text/plain", **options)
    served.start()
    try:
        yield served
    finally:
        served.stop()


def _connect(server: MetricsServer) -> socket.socket:
    host, port = server.server_address[:2]
    sock = socket.create_connection((str(host), int(port)), timeout=GUARD)
    return sock


def _closed_by_server(sock: socket.socket) -> bool:
    """Whether the server closes this connection (reads end-of-file) within GUARD."""
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def _eventually(check: Callable[[], bool]) -> bool:
    deadline = time.monotonic() + GUARD
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.05)
    return False


def scrapes(server: MetricsServer) -> bool:
    try:
        with urllib.request.urlopen(server.url, timeout=GUARD) as reply:
            return bool(reply.status == 200)
    except OSError:
        return False


@pytest.mark.parametrize("server", [{"request_timeout": 0.2}], indirect=True)
def test_a_connection_that_sends_nothing_is_closed(server: MetricsServer) -> None:
    with _connect(server) as idle:
        assert _closed_by_server(idle)
    with _connect(server) as partial:  # half a request line, then nothing
        partial.sendall(b"GET /metr")
        assert _closed_by_server(partial)
    assert scrapes(server)


@pytest.mark.parametrize("server", [{"max_connections": 3}], indirect=True)
def test_connections_past_the_cap_are_closed_and_a_freed_slot_serves_again(
    server: MetricsServer,
) -> None:
    held = [_connect(server) for _ in range(3)]
    extra = [_connect(server) for _ in range(10)]
    try:
        for sock in extra:
            assert _closed_by_server(sock)
    finally:
        for sock in held + extra:
            sock.close()
    assert _eventually(lambda: scrapes(server))


def test_the_defaults_bound_the_wait_and_the_connections(server: MetricsServer) -> None:
    assert 0 < server.request_timeout <= 30
    assert 0 < server.max_connections <= 64
    assert scrapes(server)


def test_head_answers_as_get_does_without_a_body(server: MetricsServer) -> None:
    """A probe's HEAD was 501 Unsupported method, which reads as a broken target."""
    request = urllib.request.Request(server.url, method="HEAD")
    with urllib.request.urlopen(request, timeout=GUARD) as reply:
        assert reply.status == 200
        assert int(reply.headers["Content-Length"]) == len(_exposition())
        assert reply.read() == b""

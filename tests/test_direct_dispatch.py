"""`spool serve`'s direct call into app.py's views (local/direct_dispatch.py) answers
every request byte for byte as chalice's LocalGateway does.

The same corpus of requests (good and bad bodies, content types and charsets,
keys missing, wrong, repeated or another tenant's, unknown routes, 405s, HEAD,
OPTIONS, query strings, paths with escapes, the dashboard) is sent over real
sockets twice: once to a server whose ChaliceWSGI takes the direct path, once to
one that sends every request through the gateway (`direct=False`), each on a
fresh SQLite store starting at the same fake time with the same job ids. The
answers, status line, headers (in order) and body, must be the same bytes; only
waitress's Date header, which is the wall clock's, is left out.
"""

from __future__ import annotations

import gzip
import itertools
import json
import socket
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

import app as spool_app
from chalicelib import service
from chalicelib.api import http as api_http
from chalicelib.api import routes
from chalicelib.clock import FakeClock
from local.quick_routes import quick_requests
from local.server import ChaliceWSGI, Server
from tests.apikit import KEY_A, KEY_B, OPERATOR_KEY, installed, settings_for

# Ids the service gives jobs, the same on both runs: "j_" and 32 hex digits.
FIRST = "j_" + "0" * 31 + "1"
JOB = b'{"type": "echo", "payload": {"n": 1}}'


def _request(
    method: str,
    path: str,
    body: bytes | None = None,
    key: str | None = KEY_A,
    headers: tuple[tuple[str, str], ...] = (("Content-Type", "application/json"),),
    chunked: bool = False,
) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", "Connection: close"]
    if key is not None:
        lines.append(f"X-API-Key: {key}")
    lines.extend(f"{name}: {value}" for name, value in headers)
    payload = b""
    if body is not None and chunked:
        lines.append("Transfer-Encoding: chunked")
        payload = b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body) if body else b"0\r\n\r\n"
    elif body is not None:
        lines.append(f"Content-Length: {len(body)}")
        payload = body
    return "\r\n".join(lines).encode("latin-1") + b"\r\n\r\n" + payload


def _corpus() -> list[bytes]:
    """Requests in the order sent: the later ones read what the earlier ones made."""
    job_path = f"/status/{FIRST}"
    utf8 = "application/json; charset=utf-8"
    requests = [
        _request("POST", "/enqueue", JOB),  # 201: FIRST
        _request("POST", "/enqueue", b'{"type": "echo", "idempotency_key": "k1"}'),
        _request("POST", "/enqueue", b'{"type": "echo", "idempotency_key": "k1"}'),  # 200
        _request("POST", "/enqueue", b'{"type": "echo", "idempotency_key": "k1", "queue": "q"}'),
        _request("POST", "/enqueue", JOB, headers=(("Content-Type", utf8),)),
        _request("POST", "/enqueue", JOB, headers=(("Content-Type", "text/plain"),)),
        _request("POST", "/enqueue", JOB, headers=(("Content-Type", "application/octet-stream"),)),
        _request("POST", "/enqueue", JOB, headers=()),  # no Content-Type
        _request("POST", "/enqueue", JOB, headers=(("Content-Type", "image/png"),)),
        _request("POST", "/enqueue", JOB, chunked=True),
        _request(
            "POST",
            "/enqueue",
            '{"type": "echo", "payload": {"s": "café ✓ \U0001f600"}}'.encode(),
            headers=(("Content-Type", "application/json; charset=latin-1"),),
        ),
        _request("POST", "/enqueue", '{"type": "echo", "payload": {"s": "é✓"}}'.encode()),
        _request("POST", "/enqueue", b'{"type": "echo", "payload": {"s": "\\ud800"}}'),
        _request("POST", "/enqueue", b'{"type": "echo", "payload": {"s": "\xff"}}'),
        _request("POST", "/enqueue", b'{"type": "echo",'),  # malformed
        _request("POST", "/enqueue", b""),
        _request("POST", "/enqueue", None),
        _request("POST", "/enqueue", b"[1, 2]"),
        _request("POST", "/enqueue", b'{"type": "echo", "payload": {"x": NaN}}'),
        _request("POST", "/enqueue", b'{"type": "echo", "payload": {"x": 1e999}}'),
        _request("POST", "/enqueue", b'{"type": "nope"}'),
        _request("POST", "/enqueue", b'{"type": "echo", "id": "j_x", "state": "dead"}'),
        _request("POST", "/enqueue", b'{"type": "echo", "delay": "5"}'),
        _request("POST", "/enqueue", b'{"type": "echo", "payload": ' + b"[" * 2000 + b"]" * 2000),
        _request(
            "POST", "/enqueue", b'{"type": "echo", "payload": {"pad": "' + b"x" * 5000 + b'"}}'
        ),
        _request("POST", "/enqueue", gzip.compress(JOB), headers=(("Content-Encoding", "gzip"),)),
        _request("POST", "/enqueue", json.dumps({"jobs": [{"type": "echo"}] * 3}).encode()),
        _request("POST", "/enqueue", b'{"jobs": [{"type": "echo"}, {"type": "nope"}]}'),
        _request("POST", "/enqueue", b'{"jobs": []}'),
        _request("POST", "/enqueue", JOB, key=None),
        _request("POST", "/enqueue", JOB, key="wrong-key-0123456789"),
        _request("POST", "/enqueue", JOB, key=OPERATOR_KEY),
        _request("POST", "/enqueue", JOB, key=f"{KEY_A}, {KEY_B}"),  # repeated, different
        _request("POST", "/enqueue", JOB, key=f"{KEY_A},{KEY_A}"),  # repeated, the same
        _request("POST", "/enqueue?x=1", JOB),
        _request("POST", "/enqueue;v=1", JOB),
        _request("POST", "/enqueue/", JOB),
        _request("GET", job_path),  # miss
        _request("GET", job_path),  # the job is queued: not cached
        _request("HEAD", job_path),
        _request("GET", job_path, key=KEY_B),  # another tenant's job: 404
        _request("GET", job_path, key=None),
        _request("GET", job_path + "?attempts=true"),
        _request("GET", job_path + "?webhooks=true&attempts=1"),
        _request("GET", job_path + "?wait=0"),
        _request("GET", job_path + "?nope=1"),
        _request("GET", job_path + "?attempts=true&attempts=false"),
        _request("GET", job_path + "?attempts=%FF"),
        _request("GET", job_path + "?attempts=yes"),
        _request("GET", "/status/j_" + "f" * 32),
        _request("GET", "/status/not-an-id"),
        _request("GET", "/status/a%2Fb"),
        _request("GET", "/status/a;b"),
        _request("GET", "/status/%C3%A9t%C3%A9"),
        _request("GET", "/status/%FF"),
        _request("GET", "/status/x%09y"),
        _request("GET", "/status"),
        _request("GET", "/status/"),
        _request("GET", "/status/a/b"),
        _request("GET", "//status//" + FIRST),
        _request("GET", "/jobs"),
        _request("GET", "/jobs?state=queued&limit=2"),
        _request("GET", "/jobs?state=dead&state=queued"),
        _request("GET", "/jobs?limit=0"),
        _request("GET", "/dlq"),
        _request("POST", "/dlq/redrive", b""),
        _request("POST", "/dlq/redrive", b'{"limit": true}'),
        _request("POST", f"/dlq/{FIRST}/redrive", None),
        _request("POST", f"/jobs/{FIRST}/cancel", b'{"x": 1}'),
        _request("POST", f"/jobs/{FIRST}/cancel", b"{}"),
        _request("POST", f"/jobs/{FIRST}/cancel", None),  # already cancelled
        _request("GET", job_path),  # cancelled: a miss, then cached
        _request("GET", job_path),  # hit
        _request("GET", "/health"),
        _request("HEAD", "/health"),
        _request("GET", "/health?probe=1", key=None),
        _request("GET", "/metrics", key=OPERATOR_KEY),
        _request(
            "GET", "/metrics", headers=(("Authorization", f"Bearer {OPERATOR_KEY}"),), key=None
        ),
        _request("GET", "/metrics"),  # a tenant's key: 403
        _request("GET", "/metrics", key=None),
        _request("GET", "/openapi.json"),
        _request("GET", "/openapi.json", key=None),
        _request("GET", "/nowhere"),
        _request("GET", "/nowhere", key=None, headers=(("Authorization", "x"),)),
        _request("GET", "/ui/nowhere"),
        _request("GET", "/enqueue"),  # 405
        _request("PUT", "/enqueue", JOB),
        _request("DELETE", job_path),
        _request("PATCH", "/health", b"{}"),
        _request("OPTIONS", "/enqueue"),
        _request("OPTIONS", job_path, headers=(("Origin", "http://x"),)),
        _request("HEAD", "/enqueue"),
        _request("GET", "/ui"),
        _request("GET", "/ui/"),
        _request("GET", "/ui/static/app.js"),
        _request("GET", "/ui/static/app.css", headers=(("Accept", "application/octet-stream"),)),
        _request("GET", "/ui/static/nope.js"),
        _request("GET", "/ui/api/overview"),
        _request("GET", "/ui/api/jobs?state=cancelled"),
        _request("GET", f"/ui/api/jobs/{FIRST}"),
        _request("GET", "/ui/api/schedules"),
        _request("POST", f"/ui/api/jobs/{FIRST}/redrive", b"{}"),
        _request("POST", "/ui/api/dead/purge", b"{}"),
        _request("GET", "/health", headers=(("Accept", "image/png"),)),
        _request("GET", "/health", headers=(("Content-Type", "text/plain; charset=x"),)),
    ]
    return requests


def _exchange(port: int, request: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(request)
        chunks = []
        while chunk := conn.recv(65536):
            chunks.append(chunk)
    head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
    kept = [line for line in head.split(b"\r\n") if not line.lower().startswith(b"date:")]
    return b"\r\n".join(kept) + b"\r\n\r\n" + body


def _ids() -> Callable[[], str]:
    count = itertools.count(1)
    return lambda: f"j_{next(count):032x}"


class Runs:
    """Runs the corpus on a fresh store and server, on either path; `taken` says, for
    each request of the last direct run that reached the dispatcher, whether it
    answered (False: the gateway did)."""

    def __init__(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.tmp_path = tmp_path
        self.monkeypatch = monkeypatch
        self.taken: list[bool] = []

    def __call__(self, direct: bool, corpus: list[bytes] | None = None) -> list[bytes]:
        monkeypatch = self.monkeypatch
        ids = _ids()
        monkeypatch.setattr(service, "new_job_id", ids)
        monkeypatch.setattr(service, "new_job_ids", lambda n: [ids() for _ in range(n)])
        clock = FakeClock(datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC))
        folder = self.tmp_path / f"{'direct' if direct else 'gateway'}-{len(self.taken)}"
        folder.mkdir()
        settings = settings_for(folder, max_body_bytes=4096, demo_handlers=True)
        with installed(settings, clock) as rt:
            wsgi = ChaliceWSGI(spool_app.app, direct=direct)
            assert (wsgi.direct is not None) is direct
            if wsgi.direct is not None:
                self.taken = []
                answer = wsgi.direct.answer

                def counted(*args: Any) -> Any:
                    given = answer(*args)
                    self.taken.append(given is not None)
                    return given

                monkeypatch.setattr(wsgi.direct, "answer", counted)
            quick = quick_requests(rt.settings.store_url)
            server = Server(wsgi, "127.0.0.1", 0, threads=4, quick=quick)
            server.start()
            try:
                return [_exchange(server.port, request) for request in corpus or _corpus()]
            finally:
                server.stop()


@pytest.fixture
def runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Runs:
    monkeypatch.setattr(api_http, "PEER_HEADER_TRUSTED", api_http.PEER_HEADER_TRUSTED)
    return Runs(tmp_path, monkeypatch)


def test_the_direct_path_answers_every_request_as_the_gateway_does(
    runs: Runs,
) -> None:
    gateway = runs(False)
    direct = runs(True)
    assert gateway[0].startswith(b"HTTP/1.1 201 ") and FIRST.encode() in gateway[0]
    statuses = {answer.split(b" ", 2)[1] for answer in gateway}
    # The corpus reaches the answers it is meant to (not, say, 401 throughout).
    assert {b"200", b"201", b"400", b"401", b"403", b"404", b"405", b"409", b"413"} <= statuses
    assert b"422" in statuses
    for request, want, got in zip(_corpus(), gateway, direct, strict=True):
        assert got == want, request
    # Each request with a route and method went direct; the gateway answered no route
    # (8 paths), a method the route lacks (5) and OPTIONS (2). The path holding a tab
    # reached neither (ChaliceWSGI's own 404).
    assert len(runs.taken) == len(_corpus()) - 1
    assert runs.taken.count(False) == 15, runs.taken


@pytest.mark.parametrize("fault", ["raises", "bad header"])
def test_a_view_that_fails_is_answered_as_the_gateway_answers_it(
    runs: Runs, monkeypatch: pytest.MonkeyPatch, fault: str
) -> None:
    """chalice's own handling of a view that raises, or returns a header holding a line
    break (500, reshaped by app.py's middleware), runs on the direct path too."""

    def handle(operation: str, request: Any, **params: str) -> api_http.ApiResponse:
        if fault == "raises":
            raise RuntimeError("a bug")
        return api_http.ApiResponse(200, "{}", {"X-Bad": "a\nb"})

    monkeypatch.setattr(routes, "handle", handle)
    monkeypatch.setattr(spool_app, "_engine", None, raising=False)  # app.py's, once loaded
    corpus = [_request("POST", "/enqueue", JOB), _request("GET", f"/status/{FIRST}")]
    gateway = runs(False, corpus)
    assert all(answer.startswith(b"HTTP/1.1 500 ") for answer in gateway)
    assert runs(True, corpus) == gateway
    assert runs.taken == [True, True]

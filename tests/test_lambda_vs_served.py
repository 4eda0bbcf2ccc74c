"""The same hostile requests answered the same on Lambda as under `spool serve`.

Each request is sent over a socket to `spool serve`'s server (local/server.py) and,
as the API Gateway REST proxy event API Gateway would make of it, to app.py's
`app` as Lambda calls it; each side on a fresh SQLite store at the same fake time
with the same job ids. Status and body must be the same. Requests API Gateway
answers itself (no route, a method a route lacks: HEAD, OPTIONS) are not here:
tests/test_infra.py checks its answers' shape.
"""

from __future__ import annotations

import base64
import itertools
import json
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote

import pytest

import app as spool_app
from chalicelib import service
from chalicelib.api import http as api_http
from chalicelib.clock import FakeClock
from local.emulator import context
from local.server import ChaliceWSGI, Server
from tests.apikit import KEY_A, KEY_B, installed, settings_for

JOB = b'{"type": "echo", "payload": {"n": 1}}'
JSON = ("Content-Type", "application/json")
Request = tuple[str, str, tuple[tuple[str, str], ...], bytes | None]


def _req(
    method: str,
    path: str,
    body: bytes | None = None,
    headers: tuple[tuple[str, str], ...] = (JSON,),
    key: str | None = KEY_A,
) -> Request:
    given = ((("X-API-Key", key),) if key is not None else ()) + headers
    return (method, path, given, body)


CORPUS: list[Request] = [
    _req("POST", "/enqueue", JOB),
    _req(
        "POST",
        "/enqueue",
        JOB,
        key=None,
        headers=(JSON, ("X-API-Key", KEY_A), ("X-API-Key", KEY_B)),
    ),
    _req(
        "POST",
        "/enqueue",
        JOB,
        key=None,
        headers=(JSON, ("X-API-Key", KEY_A), ("X-API-Key", KEY_A)),
    ),
    _req("POST", "/enqueue", JOB, key=f"{KEY_A}, {KEY_B}"),  # one line, two keys
    _req("POST", "/enqueue", JOB, key=None, headers=(JSON, ("x-API-kEY", KEY_A))),
    _req("POST", "/enqueue", JOB, key="wrong-key-0123456789"),
    _req("POST", "/enqueue", JOB, key=None),
    _req("POST", "/enqueue", JOB, headers=(("Content-Type", "APPLICATION/JSON"),)),
    _req("POST", "/enqueue", JOB, headers=(("content-type", "application/json; charset=UTF-8"),)),
    _req(
        "POST", "/enqueue", JOB, headers=(("Content-Type", 'application/json;x=1;charset="utf-8"'),)
    ),
    _req(
        "POST",
        "/enqueue",
        '{"type": "echo", "payload": {"s": "café"}}'.encode(),
        headers=(("Content-Type", "application/json; charset=latin-1"),),
    ),
    _req("POST", "/enqueue", JOB, headers=()),
    _req("POST", "/enqueue", JOB, headers=(("Content-Type", "text/plain"),)),
    _req("POST", "/enqueue", JOB, headers=(("Content-Type", "application/octet-stream"),)),
    _req(
        "POST",
        "/enqueue",
        b'{"type": "echo", "payload": {"s": "\xff"}}',
        headers=(("Content-Type", "application/octet-stream"),),
    ),
    _req("POST", "/enqueue", b"\xef\xbb\xbf" + JOB),
    _req("POST", "/enqueue", b'{"type": "echo", "payload": {"pad": "' + b"x" * 5000 + b'"}}'),
    _req("POST", "/enqueue", b""),
    _req("POST", "/enqueue", None),
    _req("POST", "/enqueue", b'{"type": "echo",'),
    _req("POST", "/enqueue", b'{"type": "nope"}'),
    _req("POST", "/enqueue?x=1", JOB),
    _req("GET", "/status/j_" + "0" * 31 + "1"),
    _req("GET", "/status/a%2Fb"),
    _req("GET", "/status/%C3%A9t%C3%A9"),
    _req("GET", "/status/j_" + "a" * 5000),
    _req("GET", "/status/j_" + "0" * 31 + "1", key=KEY_B),
    _req("GET", "/jobs?state=dead&state=queued"),
    _req("GET", "/jobs?state=queued&limit=2"),
    _req("GET", "/jobs?limit=0"),
    _req("POST", "/jobs/j_" + "0" * 31 + "1/cancel", b'{"x": 1}'),
    _req("GET", "/health"),
]


def _exchange(port: int, request: Request) -> tuple[int, Any]:
    method, path, headers, body = request
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", "Connection: close"]
    lines += [f"{name}: {value}" for name, value in headers]
    if body is not None:
        lines.append(f"Content-Length: {len(body)}")
    raw = "\r\n".join(lines).encode("latin-1") + b"\r\n\r\n" + (body or b"")
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(raw)
        chunks = []
        while chunk := conn.recv(65536):
            chunks.append(chunk)
    head, _, payload = b"".join(chunks).partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), json.loads(payload)


def _route(path: str) -> tuple[str, dict[str, str] | None]:
    """The resource API Gateway matches `path` to, and its decoded path parameters."""
    given = path.split("/")[1:]
    for resource in spool_app.app.routes:
        parts = resource.split("/")[1:]
        if len(parts) != len(given):
            continue
        params = {}
        for part, segment in zip(parts, given, strict=True):
            if part.startswith("{"):
                params[part[1:-1]] = unquote(segment)
            elif part != segment:
                break
        else:
            return resource, params or None
    raise AssertionError(f"no route for {path}: API Gateway answers it, not the function")


def gateway_event(request: Request) -> dict[str, Any]:
    """What API Gateway's REST proxy integration hands the function for `request`."""
    method, target, pairs, body = request
    path, _, query = target.partition("?")
    resource, params = _route(path)
    headers: dict[str, str] = {}
    multi: dict[str, list[str]] = {}
    for name, value in (("Host", "127.0.0.1"), *pairs):
        headers[name] = value  # the last value of a repeated header
        multi.setdefault(name, []).append(value)
    kind = next((v for k, v in pairs if k.lower() == "content-type"), "")
    binary = any(kind.startswith(t.rstrip("*")) for t in spool_app.app.api.binary_types)
    text: str | None = None
    if body is not None:
        text = base64.b64encode(body).decode() if binary else body.decode("utf-8")
    queries = parse_qs(query, keep_blank_values=True) or None
    return {
        "resource": resource,
        "path": path,
        "httpMethod": method,
        "headers": headers,
        "multiValueHeaders": multi,
        "queryStringParameters": {k: v[-1] for k, v in queries.items()} if queries else None,
        "multiValueQueryStringParameters": queries,
        "pathParameters": params,
        "stageVariables": None,
        "requestContext": {
            "resourcePath": resource,
            "httpMethod": method,
            "path": path,
            "stage": "api",
            "identity": {"sourceIp": "127.0.0.1"},
        },
        "body": text,
        "isBase64Encoded": binary and body is not None,
    }


@contextmanager
def _fresh(tmp_path: Path, name: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    count = itertools.count(1)
    ids: Callable[[], str] = lambda: f"j_{next(count):032x}"  # noqa: E731
    monkeypatch.setattr(service, "new_job_id", ids)
    monkeypatch.setattr(service, "new_job_ids", lambda n: [ids() for _ in range(n)])
    folder = tmp_path / name
    folder.mkdir()
    clock = FakeClock(datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC))
    with installed(settings_for(folder, max_body_bytes=4096, demo_handlers=True), clock):
        yield


def test_lambda_answers_hostile_requests_as_spool_serve_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(api_http, "PEER_HEADER_TRUSTED", api_http.PEER_HEADER_TRUSTED)
    with _fresh(tmp_path, "served", monkeypatch):
        server = Server(ChaliceWSGI(spool_app.app), "127.0.0.1", 0, threads=2)
        server.start()
        try:
            served = [_exchange(server.port, request) for request in CORPUS]
        finally:
            server.stop()
    monkeypatch.setattr(api_http, "PEER_HEADER_TRUSTED", False)  # as on Lambda
    with _fresh(tmp_path, "lambda", monkeypatch):
        on_lambda = []
        for request in CORPUS:
            answer = spool_app.app(gateway_event(request), context("api_handler"))
            on_lambda.append((answer["statusCode"], json.loads(answer["body"])))
    assert {status for status, _ in served} >= {200, 201, 400, 401, 404, 413, 422}
    for request, want, got in zip(CORPUS, served, on_lambda, strict=True):
        assert got == want, request

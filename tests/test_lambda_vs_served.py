"""The same hostile requests answered the same on Lambda as under `spool serve`.

Each request is sent over a socket to `spool serve`'s server (local/server.py) and,
as the API Gateway REST proxy event API Gateway would make of it, to app.py's
`app` as Lambda calls it; each side on a fresh SQLite store at the same fake time
with the same job ids. Status and body must be the same. Requests API Gateway
answers itself (no route, a method a route lacks: OPTIONS) are not here:
tests/test_infra.py checks its answers' shape. HEAD is here: every GET route takes it
(app.py), answered as GET without a body on both sides.
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
from tests.apikit import KEY_A, KEY_B, OPERATOR_KEY, installed, settings_for

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
    # Blanks around a field's value are no part of it (RFC 9110 5.5): waitress drops
    # them, and API Gateway may hand them to the function.
    _req("POST", "/enqueue", JOB, key=f"{KEY_A}  "),
    _req("POST", "/enqueue", JOB, key=f"\t{KEY_A} \t"),
    _req("GET", "/status/j_" + "0" * 31 + "1", key=f" {KEY_B}"),
    _req("POST", "/enqueue", JOB, headers=(("Content-Type", "application/json  "),)),
    # A Content-Type given twice: waitress joins the lines with a comma, API Gateway
    # keeps both; different ones are two answers to what the body is, the same one once.
    _req("POST", "/enqueue", JOB, headers=(JSON, ("Content-Type", "text/plain; charset=latin-1"))),
    _req("POST", "/enqueue", JOB, headers=(JSON, JSON)),
    _req("POST", "/enqueue", JOB, headers=(("Content-Type", "application/json, text/plain"),)),
    _req("POST", "/enqueue", JOB, headers=(("Content-Type", 'application/json; x="a,b"'),)),
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
    return int(head.split(b" ", 2)[1]), _decoded(payload.decode("utf-8"))


def _decoded(body: str) -> Any:
    """A JSON answer's value, or the text of another (/metrics' exposition)."""
    return json.loads(body) if body.startswith("{") else body


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


def _both(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    corpus: list[Request],
    as_event: Callable[[Request], dict[str, Any]] | None = None,
) -> tuple[list[tuple[int, Any]], list[tuple[int, Any]]]:
    """Each request's status and body from `spool serve`, then from app.py on Lambda
    (each request made an event by `as_event`, gateway_event unless given)."""
    event_for = as_event or gateway_event
    monkeypatch.setattr(api_http, "PEER_HEADER_TRUSTED", api_http.PEER_HEADER_TRUSTED)
    with _fresh(tmp_path, "served", monkeypatch):
        server = Server(ChaliceWSGI(spool_app.app), "127.0.0.1", 0, threads=2)
        server.start()
        try:
            served = [_exchange(server.port, request) for request in corpus]
        finally:
            server.stop()
    monkeypatch.setattr(api_http, "PEER_HEADER_TRUSTED", False)  # as on Lambda
    with _fresh(tmp_path, "lambda", monkeypatch):
        on_lambda = []
        for request in corpus:
            answer = spool_app.app(event_for(request), context("api_handler"))
            on_lambda.append((answer["statusCode"], _decoded(answer["body"])))
    return served, on_lambda


def answered_alike(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cases: list[tuple[Request, int]]
) -> list[tuple[int, Any]]:
    """`spool serve`'s answers to each case's request, after checking app.py on Lambda
    gave each the same answer and `spool serve` each the case's status."""
    served, on_lambda = _both(tmp_path, monkeypatch, [request for request, _ in cases])
    for (request, status), want, got in zip(cases, served, on_lambda, strict=True):
        assert got == want, request
        assert want[0] == status, (request, want)
    return served


def test_lambda_answers_hostile_requests_as_spool_serve_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    served, on_lambda = _both(tmp_path, monkeypatch, CORPUS)
    assert {status for status, _ in served} >= {200, 201, 400, 401, 404, 413, 422}
    for request, want, got in zip(CORPUS, served, on_lambda, strict=True):
        assert got == want, request


def _bearer(token: str) -> tuple[tuple[str, str], ...]:
    return (("Authorization", f"Bearer {token}"),)


# A key (or a /metrics Bearer token) holding a control character: C0 but the tab,
# or DEL. `spool serve`'s server refuses such a header line 400 before app.py sees
# it; on Lambda the event carries the value, and app.py refused it as a wrong key
# (401, a failed sign-in counted).
CONTROL_KEYS: list[Request] = [
    _req("GET", "/jobs", key=KEY_A + "\x01"),
    _req("GET", "/jobs", key="\x01"),
    _req("GET", "/jobs", key=KEY_A + "\x00"),
    _req("GET", "/jobs", key=KEY_A[:5] + "\x1b" + KEY_A[5:]),
    _req("GET", "/jobs", key=KEY_A + "\x7f"),
    _req("GET", "/jobs", key="\x0b" + KEY_A),  # VT is no blank around a value
    _req("POST", "/enqueue", JOB, key=KEY_A + "\x0c"),
    _req("GET", f"/status/{'j_' + '0' * 31 + '1'}", key=KEY_B + "\x1f"),
    _req("GET", "/metrics", key=OPERATOR_KEY + "\x01"),
    _req("GET", "/metrics", key=None, headers=_bearer(OPERATOR_KEY + "\x7f")),
]
# Its neighbours, which HTTP carries in a header value: a tab or space inside, C1
# controls and other latin-1 letters (obs-text) are a wrong key on both (401), and
# blanks (space and tab, RFC 9110 5.5) around the key are no part of it on both. A
# Bearer token was stripped of every Unicode space (str.strip), so a no-break space
# after an operator key opened /metrics on both.
KEY_NEIGHBOURS: list[Request] = [
    _req("GET", "/jobs", key=KEY_A[:5] + "\t" + KEY_A[5:]),
    _req("GET", "/jobs", key=KEY_A[:5] + " " + KEY_A[5:]),
    _req("GET", "/jobs", key=KEY_A + "\x85"),
    _req("GET", "/jobs", key=KEY_A + "\xe9"),
    _req("GET", "/jobs", key="\xff"),
    _req("GET", "/jobs", key=f"\t {KEY_A}\t "),
    _req("GET", "/metrics", key=None, headers=_bearer(OPERATOR_KEY + "\xa0")),
]


def test_a_key_holding_a_control_character_is_400_on_both_edges(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A control character in X-API-Key was 400 under `spool serve` (a malformed header
    line) and 401 on Lambda (a wrong key). Both now answer 400, with the same body;
    a key a header can carry but no tenant owns stays 401 on both."""
    served, on_lambda = _both(tmp_path, monkeypatch, CONTROL_KEYS + KEY_NEIGHBOURS)
    for request, want, got in zip(CONTROL_KEYS + KEY_NEIGHBOURS, served, on_lambda, strict=True):
        assert got == want, request
    statuses = [status for status, _ in served]
    assert statuses == [400] * len(CONTROL_KEYS) + [401, 401, 401, 401, 401, 200, 401]


@pytest.mark.parametrize("character", ["\r", "\n", "\r\n", "\x00", "\x7f"])
def test_a_key_only_an_event_can_carry_is_400_on_lambda(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, character: str
) -> None:
    """CR and LF cannot sit inside a header line `spool serve` reads (they end it); an
    event can hold them, and they are refused as every control character is: 400, not
    a failed sign-in."""
    monkeypatch.setattr(api_http, "PEER_HEADER_TRUSTED", False)
    with _fresh(tmp_path, "lambda", monkeypatch):
        for key in (KEY_A + character, character + KEY_A, KEY_A[:4] + character + KEY_A[4:]):
            event = gateway_event(_req("GET", "/jobs", key=key))
            answer = spool_app.app(event, context("api_handler"))
            assert answer["statusCode"] == 400, repr(key)
            assert "control character" in json.loads(answer["body"])["error"]["message"]


J1 = "j_" + "0" * 31 + "1"
INVALID_HEADER = {
    "error": {"code": "bad_request", "message": api_http.INVALID_HEADER, "details": None}
}


def _note(value: str, name: str = "X-Note") -> tuple[tuple[str, str], ...]:
    return (JSON, (name, value))


# A control character (C0 but the tab, or DEL) in any other header's value, read by a
# route or not. `spool serve`'s server refuses the line, 400, before app.py sees it;
# on Lambda the event carried it past app.py: served (201, 200), or a wrong key's
# 401 counted as a failed sign-in, and a Content-Encoding of "identity\x0b" was taken
# for identity (str.strip() took the VT off).
CONTROL_HEADERS: list[Request] = [
    _req("POST", "/enqueue", JOB, headers=(("Content-Type", "application/json\x01"),)),
    _req("POST", "/enqueue", JOB, headers=(("Content-Type", "\x0bapplication/json"),)),
    _req("POST", "/enqueue", JOB, headers=_note("identity\x0b", "Content-Encoding")),
    _req("POST", "/enqueue", JOB, headers=_note("k-1\x1b[2J", "Idempotency-Key")),
    _req("GET", "/jobs", headers=_note("203.0.113.7\x00", "X-Forwarded-For")),
    _req("GET", f"/status/{J1}", headers=_note("application/json\x7f", "Accept")),
    _req("GET", "/jobs", key="wrong-key-0123456789", headers=_note("curl/8\x08", "User-Agent")),
    _req("GET", "/jobs", key=None, headers=_note("\x1f", "Accept-Language")),
    _req("GET", "/health", key=None, headers=_note("a\x0cb")),
    _req("GET", "/openapi.json", headers=_note("en\x19", "Accept-Language")),
    _req("GET", "/metrics", key=OPERATOR_KEY, headers=_note("\x04")),
    _req("GET", "/dlq", headers=_note("http://a.example\x05", "Origin")),
    _req("POST", f"/jobs/{J1}/cancel", headers=_note("r\x7f", "X-Request-Id")),
    _req("GET", "/ui/api/overview", headers=_note("s=\x02", "Cookie")),
    # Given twice, the character in the first line: API Gateway keeps the last in
    # `headers` and both in multiValueHeaders.
    _req("GET", "/jobs", headers=(JSON, ("X-Note", "a\x01"), ("X-Note", "b"))),
]
# Their neighbours, a header value HTTP carries: tabs and spaces inside, latin-1
# letters, C1 controls and a no-break space (obs-text), blanks around, an empty value.
HEADER_NEIGHBOURS: list[Request] = [
    _req("POST", "/enqueue", JOB, headers=_note("a\tb c")),
    _req("POST", "/enqueue", JOB, headers=_note("caf\xe9 \xff")),
    _req("POST", "/enqueue", JOB, headers=_note("\x85\x9f\xa0")),
    _req("POST", "/enqueue", JOB, headers=_note("k\t1", "Idempotency-Key")),
    _req("POST", "/enqueue", JOB, headers=(("Content-Type", "application/json; x=\xe9"),)),
    _req("GET", "/jobs", headers=_note("\t */* \t", "Accept")),
    _req("GET", "/jobs", headers=_note("")),
    _req("GET", "/health", key=None, headers=_note("\xe9\t\xe9")),
]


def test_a_header_holding_a_control_character_is_400_on_both_edges(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Any header value holding a control character was 400 under `spool serve` and
    served on Lambda (only a key's was refused, stop 47). Both now answer 400 in the
    same words; values a header line can carry are answered alike as before."""
    corpus = CONTROL_HEADERS + HEADER_NEIGHBOURS
    served, on_lambda = _both(tmp_path, monkeypatch, corpus)
    for request, want, got in zip(corpus, served, on_lambda, strict=True):
        assert got == want, request
    assert served[: len(CONTROL_HEADERS)] == [(400, INVALID_HEADER)] * len(CONTROL_HEADERS)
    assert [status for status, _ in served[len(CONTROL_HEADERS) :]] == [201] * 5 + [200] * 3


def _utf8_text(request: Request) -> Request:
    """`request` with each header value read as UTF-8: what API Gateway hands the
    function for the bytes `spool serve` is sent (_exchange sends each character as
    one latin-1 byte)."""
    method, path, headers, body = request
    pairs = tuple((name, value.encode("latin-1").decode("utf-8")) for name, value in headers)
    return (method, path, pairs, body)


def _utf8(text: str) -> str:
    """`text`'s UTF-8 bytes, one character each, as _exchange sends them."""
    return text.encode("utf-8").decode("latin-1")


def test_utf8_header_values_are_served_alike(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """UTF-8 text in a header value: bytes over 0x7F, which `spool serve`'s server takes
    (obs-text), and characters past U+00FF in the event; none is a control character,
    though U+0085 and U+2028 are line breaks to str.splitlines()."""
    corpus = [
        _req("POST", "/enqueue", JOB, headers=_note(_utf8("café ☃ \u2028 \u0085 日本"))),
        _req("GET", "/jobs", headers=_note(_utf8("naïve"), "Idempotency-Key")),
        _req("GET", "/jobs", key=_utf8("clé")),  # a wrong key: 401 on both
        _req("GET", "/health", key=None, headers=_note(_utf8("\u200b\ufeff"))),
    ]
    served, on_lambda = _both(tmp_path, monkeypatch, corpus, lambda r: gateway_event(_utf8_text(r)))
    for request, want, got in zip(corpus, served, on_lambda, strict=True):
        assert got == want, request
    assert [status for status, _ in served] == [201, 200, 401, 200]


def test_a_control_character_elsewhere_counts_no_failed_sign_in(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A wrong key sent with a control character in another header is refused 400
    before the key is read: it counts as no failed sign-in (SPOOL_AUTH_FAILURES,
    20 a minute), so the next wrong key is 401, not 429, on both edges."""
    refused = _req("GET", "/jobs", key="wrong-key-0123456789", headers=_note("\x01", "User-Agent"))
    corpus = [refused] * 20 + [_req("GET", "/jobs", key="wrong-key-0123456789")]
    served, on_lambda = _both(tmp_path, monkeypatch, corpus)
    assert on_lambda == served
    assert [status for status, _ in served] == [400] * 20 + [401]


@pytest.mark.parametrize("character", ["\r", "\n", "\r\n"])
@pytest.mark.parametrize("name", ["Content-Type", "X-Forwarded-For", "X-Note"])
def test_a_header_only_an_event_can_carry_is_400_on_lambda(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, character: str, name: str
) -> None:
    """CR and LF end a header line `spool serve` reads; an event can hold them inside
    a value, in `headers` or only in multiValueHeaders, and they are refused as every
    control character is, in the same words."""
    monkeypatch.setattr(api_http, "PEER_HEADER_TRUSTED", False)
    with _fresh(tmp_path, "lambda", monkeypatch):
        for value in (f"v{character}", f"{character}v", f"a{character}X-API-Key: {KEY_B}"):
            event = gateway_event(_req("POST", "/enqueue", JOB, headers=(JSON, (name, value))))
            answer = spool_app.app(event, context("api_handler"))
            assert (answer["statusCode"], json.loads(answer["body"])) == (400, INVALID_HEADER)
            event["multiValueHeaders"][name] = [value, "v"]
            event["headers"][name] = "v"
            answer = spool_app.app(event, context("api_handler"))
            assert (answer["statusCode"], json.loads(answer["body"])) == (400, INVALID_HEADER)


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [("GET", "/jobs", None), ("HEAD", "/jobs", None), ("GET", "/ui/api/overview", None)],
)
def test_a_header_refused_on_lambda_carries_every_answer_s_headers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, method: str, path: str, body: bytes | None
) -> None:
    """The refusal is made before chalice and the routes, which add the headers every
    answer carries (never cached, never sniffed; the dashboard's CSP and framing rules
    under /ui): it carries them itself, and HEAD gets it without the body."""
    from chalicelib.api.ui_routes import ERROR_HEADERS

    monkeypatch.setattr(api_http, "PEER_HEADER_TRUSTED", False)
    with _fresh(tmp_path, "lambda", monkeypatch):
        event = gateway_event(_req(method, path, body, headers=_note("\x01")))
        answer = spool_app.app(event, context("api_handler"))
    assert answer["statusCode"] == 400
    want = {**api_http.API_HEADERS, "Content-Type": "application/json"}
    if path.startswith("/ui"):
        want.update(ERROR_HEADERS)
    assert answer["headers"].items() >= want.items()
    if method == "HEAD":
        assert answer["body"] == ""
    else:
        assert json.loads(answer["body"]) == INVALID_HEADER


# HEAD of GET routes: found, missing, refused, unauthenticated, no key needed.
HEADS: list[Request] = [
    _req("HEAD", "/health"),
    _req("HEAD", "/health", key=None),
    _req("HEAD", f"/status/{J1}"),
    _req("HEAD", f"/status/{J1}", key=KEY_B),  # another tenant's job: 404
    _req("HEAD", f"/status/{J1}", key="wrong-key-0123456789"),  # 401
    _req("HEAD", "/jobs?state=queued"),
    _req("HEAD", "/jobs?limit=0"),  # 422
    _req("HEAD", "/dlq"),
    _req("HEAD", "/openapi.json"),
    _req("HEAD", "/metrics", key=None),  # 401: an operator key is needed
    _req("HEAD", "/ui/api/overview"),
]


def _exchange_head(port: int, request: Request) -> tuple[int, str, bytes]:
    """Status, Content-Type and the bytes after the head of one answer, as sent."""
    method, path, headers, _ = request
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", "Connection: close"]
    lines += [f"{name}: {value}" for name, value in headers]
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall("\r\n".join(lines).encode("latin-1") + b"\r\n\r\n")
        chunks = []
        while chunk := conn.recv(65536):
            chunks.append(chunk)
    head, _, payload = b"".join(chunks).partition(b"\r\n\r\n")
    fields = dict(
        line.decode("latin-1").split(": ", 1) for line in head.split(b"\r\n")[1:] if b": " in line
    )
    kind = {k.lower(): v for k, v in fields.items()}.get("content-type", "")
    return int(head.split(b" ", 2)[1]), kind, payload


def test_head_of_a_get_route_is_answered_as_get_without_a_body_on_both(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """HEAD /health was 200 under `spool serve` and 405 from app.py on Lambda (404 as
    deployed: API Gateway had no HEAD method to route). Now each side answers HEAD
    with the status and Content-Type its GET gets, and no body."""
    create = _req("POST", "/enqueue", JOB)
    gets = [(("GET", *rest[1:]) if rest[0] == "HEAD" else rest) for rest in HEADS]
    monkeypatch.setattr(api_http, "PEER_HEADER_TRUSTED", api_http.PEER_HEADER_TRUSTED)
    with _fresh(tmp_path, "served", monkeypatch):
        server = Server(ChaliceWSGI(spool_app.app), "127.0.0.1", 0, threads=2)
        server.start()
        try:
            assert _exchange(server.port, create)[0] == 201
            served = [_exchange_head(server.port, request) for request in HEADS]
            served_gets = [_exchange_head(server.port, request) for request in gets]
        finally:
            server.stop()
    monkeypatch.setattr(api_http, "PEER_HEADER_TRUSTED", False)  # as on Lambda
    with _fresh(tmp_path, "lambda", monkeypatch):
        assert spool_app.app(gateway_event(create), context("api_handler"))["statusCode"] == 201
        on_lambda = []
        for request in [*HEADS, *gets]:
            answer = spool_app.app(gateway_event(request), context("api_handler"))
            kind = (answer.get("headers") or {}).get("Content-Type", "")
            on_lambda.append((answer["statusCode"], kind, (answer.get("body") or "").encode()))
    lambda_heads, lambda_gets = on_lambda[: len(HEADS)], on_lambda[len(HEADS) :]
    assert {status for status, _, _ in served} >= {200, 401, 404, 422}
    for request, head, get, lam_head, lam_get in zip(
        HEADS, served, served_gets, lambda_heads, lambda_gets, strict=True
    ):
        assert head[2] == b"" and lam_head[2] == b"", request
        assert head[:2] == get[:2], request  # served: HEAD is its GET without the body
        assert lam_head[:2] == lam_get[:2], request  # Lambda: the same
        assert lam_head[:2] == head[:2], request  # and the two sides agree

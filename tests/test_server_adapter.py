"""local/server.py's WSGI adapter hands chalice the same request, and waitress the same
answer, as it did before its per-request work was cut (stop 39).

The reference here is the adapter as it was: the general path reading (every
segment percent-decoded, read as UTF-8 and escaped again), chalice's own
LambdaEventConverter (which lower-cases every header name again) over Spool's
RouteTable, and the old answer builder, copied below. What the app receives is
recorded at the gateway's call into app.py: the event, key for key (order
included), for paths, queries, headers repeated or not ASCII, and bodies.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import unquote

import pytest
from chalice.app import Response
from chalice.local import LambdaEventConverter
from hypothesis import given, settings
from hypothesis import strategies as st

import app as spool_app
from chalicelib import logs
from chalicelib.api import http as api_http
from local import server
from local.server import ChaliceWSGI, RouteTable, _escape_segment, _segments

PATHS = [
    # (what the client sent, PATH_INFO as waitress decodes it: latin-1 for bytes)
    ("/enqueue", "/enqueue"),
    ("/status/j_01ABC", "/status/j_01ABC"),
    ("/status/j_01ABC/", "/status/j_01ABC/"),
    ("//status//j_1", "/status//j_1"),
    ("/status/a%2Fb", "/status/a/b"),
    ("/status/a;b", "/status/a;b"),
    ("/status/a%3Bb", "/status/a;b"),
    ("/status/x%25y", "/status/x%y"),
    ("/status/%C3%A9t%C3%A9", "/status/\xc3\xa9t\xc3\xa9"),
    ("/status/\xc3\xa9", "/status/\xc3\xa9"),  # raw UTF-8 bytes in the request line
    ("/status/%FF", "/status/\xff"),  # not UTF-8
    ("/jobs/j_1/cancel", "/jobs/j_1/cancel"),
    ("/dlq/redrive", "/dlq/redrive"),
    ("/ui/", "/ui/"),
    ("/ui/static/app.js", "/ui/static/app.js"),
    ("/health", "/health"),
    ("/nowhere", "/nowhere"),
    ("/status/a%3Fb", "/status/a?b"),
    ("/status/a%23b", "/status/a#b"),
]
QUERIES = ["", "state=dead&state=queued&limit=", "wait=5", "find=%FF", "a=1;b=2"]


def environ(
    method: str,
    raw: str | None,
    path_info: str,
    query: str = "",
    body: bytes = b"",
    extra: dict[str, str] | None = None,
) -> dict[str, Any]:
    env: dict[str, Any] = {
        "REQUEST_METHOD": method,
        "PATH_INFO": path_info,
        "QUERY_STRING": query,
        "REMOTE_ADDR": "10.1.2.3",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "HTTP_HOST": "127.0.0.1:8000",
        "HTTP_X_API_KEY": "k-0123456789abcdef",
        "CONTENT_TYPE": "application/json",
        "CONTENT_LENGTH": str(len(body)),
        "wsgi.input": io.BytesIO(body),
        **(extra or {}),
    }
    if raw is not None:
        env["REQUEST_URI"] = raw + (f"?{query}" if query else "")
    return env


def path_before(env: dict[str, Any]) -> str:
    """The adapter's path before stop 39: always the general reading."""
    path = "/".join(_escape_segment(s) for s in _segments(env)) or "/"
    query = env.get("QUERY_STRING", "")
    return f"{path}?{query}" if query else path


def headers_before(env: dict[str, Any]) -> dict[str, str]:
    headers = {k[5:].replace("_", "-").lower(): v for k, v in env.items() if k.startswith("HTTP_")}
    if env.get("CONTENT_TYPE"):
        headers["content-type"] = env["CONTENT_TYPE"]
    if env.get("CONTENT_LENGTH"):
        headers["content-length"] = env["CONTENT_LENGTH"]
    headers["x-spool-peer"] = str(env.get("REMOTE_ADDR") or "")
    headers.pop("x-spool-repeated-headers", None)
    repeated = {}
    for name in ("x-api-key", "content-type"):  # a comma is no part of either
        line = headers.get(name)
        if line is None or "," not in line or (name == "content-type" and '"' in line):
            continue  # a Content-Type's quoted parameter may hold a comma
        values = [part.strip() for part in line.split(",")]
        headers[name] = values[-1]
        repeated[name] = values
    if repeated:
        headers["x-spool-repeated-headers"] = json.dumps(repeated)
    return headers


def event_before(env: dict[str, Any]) -> dict[str, Any] | None:
    """The event chalice's converter built, with the adapter's additions; None: no route."""
    app = spool_app.app
    converter = LambdaEventConverter(RouteTable(list(app.routes)), app.api.binary_types)
    headers = headers_before(env)
    repeated = headers.pop("x-spool-repeated-headers", None)
    length = int(env.get("CONTENT_LENGTH") or 0)
    body = env["wsgi.input"].getvalue()[:length] if length > 0 else None
    method = "GET" if env["REQUEST_METHOD"] == "HEAD" else env["REQUEST_METHOD"]
    try:
        event = converter.create_lambda_event(method, path_before(env), headers, body)
    except ValueError:
        return None
    captured = event.get("pathParameters")
    if captured:
        event["pathParameters"] = {name: unquote(value) for name, value in captured.items()}
    if repeated is not None:
        event["multiValueHeaders"] = json.loads(repeated)
    return event


@pytest.fixture
def recorded(
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[tuple[ChaliceWSGI, list[dict[str, Any]]]]:
    """The adapter, its calls into app.py (the gateway's, and local/direct_dispatch.py's
    for the routes it answers) replaced by a recorder of the event."""
    # ChaliceWSGI trusts its peer header process-wide: undone after the test.
    monkeypatch.setattr(api_http, "PEER_HEADER_TRUSTED", api_http.PEER_HEADER_TRUSTED)
    wsgi = ChaliceWSGI(spool_app.app)
    events: list[dict[str, Any]] = []

    def app_object(event: dict[str, Any], context: Any) -> dict[str, Any]:
        events.append(event)
        return {"statusCode": 200, "headers": {"Content-Type": "text/plain"}, "body": "ok"}

    def direct_call(entry: Any, event: dict[str, Any]) -> Response:
        events.append(event)
        return Response(body="ok", headers={"Content-Type": "text/plain"})

    wsgi.gateway._app_object = app_object  # type: ignore[assignment]
    # The routes local/direct_dispatch.py answers get their event there.
    assert wsgi.direct is not None
    monkeypatch.setattr(wsgi.direct, "_call", direct_call)
    yield wsgi, events


def served_event(wsgi: ChaliceWSGI, events: list[dict[str, Any]], env: dict[str, Any]) -> Any:
    events.clear()
    # The adapter marks its thread as serving requests (no invocation id on its log
    # lines); restored after, so later tests on this thread are not marked too.
    with logs.outside_invocation():
        wsgi(env, lambda status, headers: None)
    return events[0] if events else None


def same(got: Any, want: Any) -> None:
    assert got == want
    if want is not None:  # key for key, in the same order
        assert list(got) == list(want)
        assert list(got["requestContext"]) == list(want["requestContext"])
        assert list(got["headers"].items()) == list(want["headers"].items())


@pytest.mark.parametrize(("raw", "path_info"), PATHS)
@pytest.mark.parametrize("query", QUERIES)
def test_the_app_gets_the_event_it_got_before(
    recorded: tuple[ChaliceWSGI, list[dict[str, Any]]], raw: str, path_info: str, query: str
) -> None:
    wsgi, events = recorded
    for method, body in (("GET", b""), ("POST", b'{"type": "echo", "payload": {"n": "\xc3\xa9"}}')):
        env = environ(method, raw, path_info, query, body)
        want = event_before(environ(method, raw, path_info, query, body))
        if api_http.CONTROL.search(path_before(env)) is None:
            same(served_event(wsgi, events, env), want)


@pytest.mark.parametrize(
    "extra",
    [
        {"HTTP_X_API_KEY": "k-a, k-b"},  # repeated: multiValueHeaders
        {"HTTP_X_API_KEY": "k-a,k-a"},
        {"HTTP_X_SPOOL_REPEATED_HEADERS": '{"x-api-key": ["forged"]}'},  # never the client's
        {"CONTENT_TYPE": "application/json, text/plain"},  # repeated: multiValueHeaders
        {"CONTENT_TYPE": "application/json, application/json", "HTTP_X_API_KEY": "k-a, k-b"},
        {"CONTENT_TYPE": 'application/json; x="a,b"'},  # a quoted comma: one value
        {"HTTP_X_SPOOL_PEER": "6.6.6.6"},  # never the client's
        {"HTTP_ACCEPT": "application/octet-stream", "HTTP_X_CUSTOM": "caf\xc3\xa9"},
        {"CONTENT_TYPE": "application/octet-stream"},  # a binary type: a base64 body
        {"CONTENT_TYPE": "", "CONTENT_LENGTH": ""},
        {"HTTP_CONTENT_ENCODING": "gzip", "HTTP_AUTHORIZATION": "Bearer x"},
    ],
)
def test_headers_reach_the_app_as_before(
    recorded: tuple[ChaliceWSGI, list[dict[str, Any]]], extra: dict[str, str]
) -> None:
    wsgi, events = recorded
    body = b'{"type": "echo"}'
    for raw, path_info in (
        ("/enqueue", "/enqueue"),
        ("/status/a;b", "/status/a;b"),
        (None, "/health"),
    ):
        env = environ("POST", raw, path_info, "", body, extra)
        same(
            served_event(wsgi, events, env),
            event_before(environ("POST", raw, path_info, "", body, extra)),
        )


segment = st.lists(
    st.sampled_from([*"az09_-.~;%/?#é:", "%2F", "%3B", "%25", "%C3%A9", "%FF"]), max_size=6
).map("".join)


@settings(max_examples=400, deadline=None)
@given(parts=st.lists(segment, max_size=4), slashes=st.sampled_from(["/", "//"]))
def test_every_path_is_read_as_the_general_reading_reads_it(parts: list[str], slashes: str) -> None:
    raw = slashes + "/".join(parts)
    raw = raw.split("#", 1)[0].split("?", 1)[0]
    # waitress: PATH_INFO is the raw path, leading `/`s made one, percent-decoded, latin-1
    path_info = "/" + unquote(raw.lstrip("/"), encoding="latin-1")
    env = environ("GET", raw, path_info)
    assert server._path(env) == path_before(env)


def test_a_plain_path_is_read_without_decoding_its_segments(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The cut itself: an ASCII path sent with no escape and no `;` (nearly every
    request) is PATH_INFO as it stands, not split, decoded and escaped again."""

    def general(env: dict[str, Any]) -> list[str]:
        raise AssertionError("the general reading ran")

    monkeypatch.setattr(server, "_segments", general)
    assert server._path(environ("GET", "/status/j_01ABC", "/status/j_01ABC", "a=1")) == (
        "/status/j_01ABC?a=1"
    )
    with pytest.raises(AssertionError):
        server._path(environ("GET", "/status/a%2Fb", "/status/a/b"))
    with pytest.raises(AssertionError):
        server._path(environ("GET", "/status/a;b", "/status/a;b"))


def send_before(
    status: int, headers: dict[str, Any], body: str | bytes
) -> tuple[str, list[Any], list[bytes]]:
    """The answer builder before stop 39."""
    data = body.encode("utf-8") if isinstance(body, str) else body
    pairs: list[tuple[str, str]] = []
    for name, value in headers.items():
        if name.lower() == "content-length":
            continue
        values = value if isinstance(value, list) else [value]
        pairs.extend((name, str(v)) for v in values)
    if data and not any(n.lower() == "content-type" for n, _ in pairs):
        pairs.append(("Content-Type", "application/json"))
    pairs.append(("Content-Length", str(len(data))))
    return f"{status} {server._reason(status)}", pairs, [data]


@pytest.mark.parametrize(
    ("status", "headers", "body"),
    [
        (201, {"Content-Type": "application/json", "Location": "/status/j_1"}, '{"id":"j_1"}'),
        (200, {"content-type": "text/html", "X-Cache": "hit"}, "é"),
        (200, {"Set-Cookie": ["a=1", "b=2"], "Content-Length": "99"}, b"{}"),
        (200, {"Content-Type": [], "X-N": 5}, b"x"),  # an empty list is no Content-Type
        (204, {}, b""),
        (404, {"CONTENT-TYPE": ["application/problem+json"]}, "{}"),
        (299, {"Vary": ["a", "b"]}, ""),
    ],
)
def test_the_answer_is_the_one_sent_before(status: int, headers: dict[str, Any], body: Any) -> None:
    sent: list[Any] = []
    out = server._send(lambda s, h: sent.append((s, h)), status, headers, body)
    assert (sent[0][0], sent[0][1], out) == send_before(status, headers, body)


_ANSWER_HEADER_NAMES = [
    *("Content-Type", "content-type", "CONTENT-TYPE", "Content-Length", "content-length"),
    *("Location", "X-Cache", "Cache-Control", "Set-Cookie"),
]
_ANSWER_VALUES = st.text(max_size=5) | st.integers() | st.lists(st.text(max_size=3), max_size=2)


@settings(max_examples=400, deadline=None)
@given(
    status=st.sampled_from([200, 201, 204, 400, 404, 299]),
    headers=st.dictionaries(st.sampled_from(_ANSWER_HEADER_NAMES), _ANSWER_VALUES, max_size=5),
    body=st.sampled_from(["", "{}", "é", b"", b"x"]),
)
def test_any_answer_is_the_one_sent_before(status: int, headers: dict[str, Any], body: Any) -> None:
    """Over any mix of names, cases, repeated (list) and non-text values, and twice
    over (a cut that remembers what an answer's names hold was tried in stop 44)."""
    sent: list[Any] = []
    for _ in range(2):
        sent.clear()
        out = server._send(lambda s, h: sent.append((s, h)), status, headers, body)
        assert (sent[0][0], sent[0][1], out) == send_before(status, headers, body)


def test_headers_come_from_each_request_though_their_names_are_remembered() -> None:
    """_headers remembers which environ keys are headers for a sequence of keys it has
    seen (stop 40): a request with the same keys gets its own values, one with other
    keys its own headers, each as the reading of every key gave them."""
    first = environ("POST", "/enqueue", "/enqueue", extra={"HTTP_X_A": "1"})
    again = environ("POST", "/enqueue", "/enqueue", extra={"HTTP_X_A": "2"})
    other = environ("POST", "/enqueue", "/enqueue", extra={"HTTP_X_B_C": "3"})
    for env in (first, again, other, first):
        assert list(server._headers(env).items()) == list(headers_before(env).items())
    assert server._headers(again)["x-a"] == "2"
    assert "x-a" not in server._headers(other) and server._headers(other)["x-b-c"] == "3"

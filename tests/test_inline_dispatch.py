"""Quick requests answered on the server's loop thread (local/inline_dispatch.py).

A real waitress Server on 127.0.0.1 around a small WSGI app that records which
thread answered each request and can hold a request until the test lets it go:
what runs inline and what goes to the pool, that a stalled inline request does
not stop the server answering others, pipelining, big answers, and errors."""

from __future__ import annotations

import http.client
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from local import inline_dispatch
from local import server as server_module
from local.inline_dispatch import InlineTaskDispatcher
from local.quick_routes import QUICK_BODY_BYTES, quick_requests
from local.server import Server

BIG = 40 * 1024 * 1024  # well over waitress's 16 MiB outbuf high watermark


class RecordingApp:
    """Answers with the serving thread's name; /hold waits for `release`."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.holding = threading.Event()
        self.threads: list[tuple[str, str]] = []

    def __call__(
        self, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        path = environ["PATH_INFO"]
        length = int(environ.get("CONTENT_LENGTH") or 0)
        if length:
            environ["wsgi.input"].read(length)
        name = threading.current_thread().name
        self.threads.append((path, name))
        if path == "/hold":
            self.holding.set()
            self.release.wait(30)
        if path == "/boom":
            raise RuntimeError("the app failed")
        if path == "/big":  # two writes: the second finds the buffer past the mark
            start_response("200 OK", [("Content-Length", str(BIG + 3))])
            return [b"x" * BIG, b"end"]
        body = name.encode()
        start_response("200 OK", [("Content-Length", str(len(body)))])
        return [body]


def quick_paths(method: str, path: str, query: str, length: int) -> bool:
    return path in ("/fast", "/hold", "/big", "/boom", "/upload") and length <= 1024


@contextmanager
def serving(app: RecordingApp, quick: Any = quick_paths) -> Iterator[Server]:
    server = Server(app, "127.0.0.1", 0, threads=4, quick=quick)
    thread = server.start()
    try:
        yield server
    finally:
        app.release.set()
        server.stop()
        thread.join(10)


def hold(server: Server, app: RecordingApp) -> tuple[threading.Thread, list[tuple[int, bytes]]]:
    """GET /hold from a thread of its own, once the app is inside it."""
    answers: list[tuple[int, bytes]] = []
    holder = threading.Thread(target=lambda: answers.append(get(server, "/hold", 30)))
    holder.start()
    assert app.holding.wait(10)
    return holder, answers


def rescues(server: Server) -> int:
    dispatcher = server._server.task_dispatcher
    assert isinstance(dispatcher, InlineTaskDispatcher)
    return dispatcher.rescues


def get(server: Server, path: str, timeout: float = 10) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection(server.host, server.port, timeout=timeout)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def test_quick_requests_are_answered_on_the_loop_thread_others_on_the_pool() -> None:
    app = RecordingApp()
    with serving(app) as server:
        assert get(server, "/fast") == (200, b"spool-http")  # Server.start's loop thread
        status, body = get(server, "/slow-route")
        assert status == 200 and body != b"spool-http"  # a pool thread


def test_without_a_predicate_every_request_goes_to_the_pool() -> None:
    app = RecordingApp()
    with serving(app, quick=None) as server:
        status, body = get(server, "/fast")
        assert status == 200 and body != b"spool-http"


def test_a_body_over_the_predicates_limit_goes_to_the_pool() -> None:
    app = RecordingApp()
    with serving(app) as server:
        conn = http.client.HTTPConnection(server.host, server.port, timeout=10)
        conn.request("POST", "/upload", body=b"y" * 100)
        assert conn.getresponse().read() == b"spool-http"
        conn.request("POST", "/upload", body=b"y" * 5000)
        assert conn.getresponse().read() != b"spool-http"
        # A chunked body is judged by its length once read, not as empty.
        conn.request("POST", "/upload", body=iter([b"z" * 3000, b"z" * 3000]))
        assert conn.getresponse().read() != b"spool-http"
        conn.close()


def test_a_stalled_inline_request_does_not_stop_the_server_answering_others() -> None:
    app = RecordingApp()
    with serving(app) as server:
        holder, held = hold(server, app)
        # The loop thread is inside /hold: the watchdog takes the loop over and
        # these are answered by the pool meanwhile, quick or not.
        for path in ("/fast", "/slow-route", "/fast"):
            status, body = get(server, path, timeout=5)
            assert status == 200 and body not in (b"spool-http", b"spool-http-watchdog")
        assert not held  # still held
        assert rescues(server) == 1
        app.release.set()
        holder.join(10)
        assert held == [(200, b"spool-http")]
        # The loop is back with its own thread: quick requests inline again.
        deadline = time.monotonic() + 5
        while get(server, "/fast")[1] != b"spool-http":
            assert time.monotonic() < deadline, "the loop never went back inline"
            time.sleep(0.05)


def test_a_stall_right_after_idleness_is_still_taken_over(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Idle, the watchdog sleeps until the next inline request wakes it (an idle
    # server costs no CPU); the first request after that must still be watched.
    monkeypatch.setattr(inline_dispatch, "IDLE_AFTER", 0.1)
    monkeypatch.setattr(inline_dispatch, "IDLE_WAKE", 60.0)  # only the request wakes it
    app = RecordingApp()
    with serving(app) as server:
        assert get(server, "/fast") == (200, b"spool-http")
        dispatcher = server._server.task_dispatcher
        deadline = time.monotonic() + 10
        while dispatcher.watching:
            assert time.monotonic() < deadline, "the watchdog never slept"
            time.sleep(0.02)
        holder, held = hold(server, app)
        assert get(server, "/fast", timeout=5)[0] == 200
        assert rescues(server) == 1
        app.release.set()
        holder.join(10)
        assert held == [(200, b"spool-http")]


def test_a_stop_during_a_takeover_refuses_new_clients_and_answers_the_stalled_one() -> None:
    app = RecordingApp()
    server = Server(app, "127.0.0.1", 0, threads=2, quick=quick_paths)
    thread = server.start()
    holder, held = hold(server, app)
    deadline = time.monotonic() + 10
    while rescues(server) == 0:
        assert time.monotonic() < deadline, "the watchdog never took the loop"
        time.sleep(0.02)
    server.stop(wait=0.5)  # cannot finish: the loop's own thread is in /hold
    refused = False
    while not refused:
        assert time.monotonic() < deadline + 10, "new clients were still let in"
        try:
            socket.create_connection((server.host, server.port), timeout=1).close()
            time.sleep(0.05)
        except OSError:
            refused = True
    app.release.set()
    holder.join(10)
    thread.join(10)
    assert held == [(200, b"spool-http")]
    assert not thread.is_alive()


def test_pipelined_requests_on_one_connection_are_answered_in_order() -> None:
    app = RecordingApp()
    with serving(app) as server:
        sock = socket.create_connection((server.host, server.port), timeout=10)
        paths = ["/fast", "/slow-route", "/fast", "/fast", "/slow-route", "/fast"]
        sock.sendall(b"".join(f"GET {p} HTTP/1.1\r\nHost: x\r\n\r\n".encode() for p in paths))
        stream = sock.makefile("rb")
        bodies = [read_response(stream) for _ in paths]
        sock.close()
        assert [path for path, _ in app.threads] == paths
        assert [name for _, name in app.threads] == [body.decode() for body in bodies]


def read_response(stream: Any) -> bytes:
    """One HTTP/1.1 response's body off a stream carrying several."""
    assert stream.readline().startswith(b"HTTP/1.1 200")
    length = 0
    while (line := stream.readline()) not in (b"\r\n", b""):
        name, _, value = line.decode().partition(":")
        if name.lower() == "content-length":
            length = int(value)
    body: bytes = stream.read(length)
    return body


def test_an_answer_over_the_buffer_watermark_served_inline_arrives_whole() -> None:
    # A thread writing past waitress's 16 MiB mark waits for the loop to drain the
    # buffer; inline, the loop is that thread's own, so the watchdog has to run it.
    app = RecordingApp()
    with serving(app) as server:
        status, body = get(server, "/big", timeout=30)
        assert status == 200 and len(body) == BIG + 3 and body.endswith(b"xend")
        assert get(server, "/fast") == (200, b"spool-http")


def test_a_client_that_never_reads_a_big_inline_answer_does_not_hold_the_loop(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Past 16 MiB unsent, waitress makes the writing thread wait for the client to
    # read. Inline, that thread is the loop's: it must not wait (a stop would never
    # end); the request pipelined behind it waits on a pool thread instead.
    monkeypatch.setattr(server_module, "STOP_GRACE", 1.0)
    app = RecordingApp()
    server = Server(app, "127.0.0.1", 0, threads=2, quick=quick_paths)
    thread = server.start()
    sock = socket.create_connection((server.host, server.port), timeout=10)
    try:
        sock.sendall(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\nGET /fast HTTP/1.1\r\nHost: x\r\n\r\n")
        deadline = time.monotonic() + 10
        while [p for p, _ in app.threads] != ["/big", "/fast"]:
            assert time.monotonic() < deadline, f"served only {app.threads}"
            time.sleep(0.02)
        assert get(server, "/fast") == (200, b"spool-http")  # the loop is free
        server.stop(wait=20)
        thread.join(5)
        assert not thread.is_alive()
    finally:
        sock.close()


def test_an_app_error_inline_is_a_500_and_the_server_goes_on() -> None:
    app = RecordingApp()
    with serving(app) as server:
        status, _ = get(server, "/boom")
        assert status == 500
        assert get(server, "/fast") == (200, b"spool-http")


def test_stop_answers_a_queued_quick_request_first() -> None:
    app = RecordingApp()
    server = Server(app, "127.0.0.1", 0, threads=2, quick=quick_paths)
    thread = server.start()
    holder, answers = hold(server, app)
    stopper = threading.Thread(target=server.stop)
    stopper.start()
    time.sleep(0.2)
    app.release.set()
    holder.join(10)
    stopper.join(15)
    thread.join(10)
    assert answers == [(200, b"spool-http")]
    assert not thread.is_alive()


@pytest.mark.parametrize(
    ("method", "path", "query", "length", "quick"),
    [
        ("POST", "/enqueue", "", 200, True),
        ("POST", "/enqueue", "", QUICK_BODY_BYTES, True),
        ("POST", "/enqueue", "", QUICK_BODY_BYTES + 1, False),
        ("GET", "/status/abc", "", 0, True),
        ("HEAD", "/status/abc", "", 0, True),
        ("GET", "/status/abc", "wait=20", 0, False),
        ("GET", "/status/abc", "WAIT=20", 0, False),
        ("GET", "/status/abc", "x=1&wait=5", 0, False),
        ("GET", "/status/abc", "%77ait=5", 0, False),
        ("GET", "/status/abc", "wa%69t=5", 0, False),
        ("GET", "/status/abc", "attempts=true", 0, True),
        ("GET", "/health", "", 0, True),
        ("POST", "/jobs/abc/cancel", "", 0, True),
        ("GET", "/jobs", "", 0, False),
        ("GET", "/metrics", "", 0, False),
        ("GET", "/ui", "", 0, False),
        ("POST", "/dlq/redrive", "", 10, False),
        ("DELETE", "/enqueue", "", 0, False),
        ("GET", "/enqueue", "", 0, False),
    ],
)
def test_spool_serve_answers_only_short_hot_routes_inline(
    method: str, path: str, query: str, length: int, quick: bool
) -> None:
    predicate = quick_requests("sqlite:///tmp/x.db")
    assert predicate is not None
    assert predicate(method, path, query, length) is quick


@pytest.mark.parametrize(
    ("url", "inline"),
    [
        ("sqlite:///spool.db", True),
        ("SQLite:///spool.db", True),
        ("memory://", True),
        ("postgresql://127.0.0.1/test", False),
        ("redis://127.0.0.1:6379/0", False),
        ("dynamodb://jobs?queue=q", False),
    ],
)
def test_only_embedded_stores_are_served_inline(url: str, inline: bool) -> None:
    assert (quick_requests(url) is not None) is inline

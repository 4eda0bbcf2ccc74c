"""Fair turns between callers in `spool serve`'s thread pool (local/fair_queue.py).

Found by an attacker's pass: one tenant sent 200 slow GET /jobs?limit=1000 at once
and closed its connections; another tenant's GET /jobs?limit=1 then waited behind
all of them, first come, first served. Real servers on 127.0.0.1 with a small pool,
asserting on the order requests were served in, never on time."""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import app as spool_app
from local.fair_queue import ANONYMOUS, FairQueue, lane_of
from local.http_limits import HttpLimits
from local.inline_dispatch import InlineTaskDispatcher, TaskDispatcher
from local.server import ChaliceWSGI, Server
from tests.apikit import KEY_A, KEY_B, installed, settings_for

THREADS = 2
FLOOD = 12


class Channel:
    """What the queue sees of a waitress channel: its next request's headers."""

    def __init__(self, key: str | None, name: str = "") -> None:
        headers = {} if key is None else {"X_API_KEY": key}
        self.requests = [SimpleNamespace(headers=headers)]
        self.name = name
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


def names(queue: FairQueue) -> list[str]:
    popped = []
    while queue:
        popped.append(queue.popleft().name)
    return popped


def test_callers_take_turns_and_one_caller_keeps_its_order() -> None:
    queue = FairQueue()
    for name in ("a1", "a2", "a3"):
        queue.append(Channel("key-a", name))
    queue.append(Channel("key-b", "b1"))
    queue.append(Channel(None, "n1"))
    queue.append(Channel("key-b", "b2"))
    assert len(queue) == 6 and queue.lanes() == 3
    assert names(queue) == ["a1", "b1", "n1", "a2", "b2", "a3"]
    assert queue.lanes() == 0 and len(queue) == 0
    for name in ("a1", "a2", "a3"):
        queue.append(Channel("key-a", name))
    assert names(queue) == ["a1", "a2", "a3"]


def test_a_lane_is_a_digest_of_the_key_as_sent_and_no_key_is_anonymous() -> None:
    assert lane_of(Channel(None)) == lane_of(Channel("")) == ANONYMOUS
    assert lane_of(SimpleNamespace(requests=[])) == ANONYMOUS
    lane = lane_of(Channel(KEY_A))
    assert lane == lane_of(Channel(KEY_A)) != lane_of(Channel(KEY_B))
    assert KEY_A.encode() not in lane and lane != ANONYMOUS
    assert lane_of(Channel(KEY_A + " ")) != lane  # the header as carried, not resolved


def test_requests_the_inline_watchdog_hands_over_take_turns_too() -> None:
    dispatcher = InlineTaskDispatcher(lambda *_: True)  # no threads: nothing pops
    for channel in (Channel("a", "a1"), Channel("a", "a2"), Channel("a", "a3"), Channel("b", "b1")):
        dispatcher.pending.append(channel)
    dispatcher.drain_to_pool()
    assert isinstance(dispatcher.queue, FairQueue)
    assert names(dispatcher.queue) == ["a1", "b1", "a2", "a3"]


def test_a_shutdown_still_cancels_every_pending_request() -> None:
    dispatcher = TaskDispatcher()
    queued = [Channel("a"), Channel("a"), Channel("b"), Channel(None)]
    for channel in queued:
        dispatcher.add_task(channel)
    assert dispatcher.shutdown(cancel_pending=True, timeout=1)
    assert all(channel.cancelled for channel in queued) and not dispatcher.queue


# -- a real server ------------------------------------------------------------


class GatedApp:
    """Records who each request came from as it starts; /hold waits for `release`."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.started: list[str] = []

    def __call__(
        self, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        self.started.append(environ.get("HTTP_X_API_KEY", "-"))
        if environ["PATH_INFO"] == "/hold":
            self.release.wait(30)
        start_response("200 OK", [("Content-Length", "2")])
        return [b"ok"]


def queued(server: Server) -> int:
    dispatcher = server._server.task_dispatcher
    with dispatcher.lock:
        return len(dispatcher.queue)


def wait_for(check: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 30
    while not check():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.01)


def send_and_hang_up(server: Server, path: str, key: str) -> None:
    """The flood's request: sent whole, then the connection closed at once."""
    with socket.create_connection((server.host, server.port), timeout=10) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nX-API-Key: {key}\r\n\r\n".encode())


def get(server: Server, path: str, key: str) -> int:
    conn = http.client.HTTPConnection(server.host, server.port, timeout=60)
    try:
        conn.request("GET", path, headers={"X-API-Key": key})
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


@contextmanager
def running(app: Callable[..., Iterable[bytes]]) -> Iterator[Server]:
    server = Server(app, "127.0.0.1", 0, threads=THREADS, limits=HttpLimits(request_timeout=30))
    thread = server.start()
    try:
        yield server
    finally:
        server.stop()
        thread.join(10)


def test_another_callers_request_is_served_before_a_floods_tail() -> None:
    app = GatedApp()
    with running(app) as server:
        try:
            for _ in range(FLOOD):
                send_and_hang_up(server, "/hold", "A")
            wait_for(lambda: queued(server) == FLOOD - THREADS, "the flood to queue")
            answered: list[int] = []
            caller_b = threading.Thread(target=lambda: answered.append(get(server, "/b", "B")))
            caller_b.start()
            wait_for(lambda: queued(server) == FLOOD - THREADS + 1, "B's request to queue")
        finally:
            app.release.set()
        caller_b.join(30)
        assert answered == [200]
        wait_for(lambda: len(app.started) == FLOOD + 1, "every request to be served")
    # Round robin: B's turn comes after at most one more of A's (first come, first
    # served, it came after all twelve).
    assert app.started.index("B") <= THREADS + 1, app.started


def test_a_tenants_flood_of_big_pages_does_not_hold_back_another_tenants_page(
    tmp_path: Path,
) -> None:
    """The attacker's pass against app.py itself: tenant A's GET /jobs?limit=1000
    over 1,000 jobs, sent and hung up on; tenant B's GET /jobs?limit=1 after them."""
    served: list[str] = []
    wsgi = ChaliceWSGI(spool_app.app)

    def recorded(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        answer = wsgi(environ, start_response)
        served.append(environ.get("HTTP_X_API_KEY", "-"))
        return answer

    with installed(settings_for(tmp_path, demo_handlers=True)), running(recorded) as server:
        for _ in range(10):
            jobs = [{"type": "echo", "payload": {"n": n}} for n in range(100)]
            conn = http.client.HTTPConnection(server.host, server.port, timeout=30)
            conn.request(
                "POST",
                "/enqueue",
                body=json.dumps({"jobs": jobs}),
                headers={"X-API-Key": KEY_A, "Content-Type": "application/json"},
            )
            assert conn.getresponse().status == 201
            conn.close()
        served.clear()
        for _ in range(FLOOD):
            send_and_hang_up(server, "/jobs?limit=1000", KEY_A)
        wait_for(lambda: queued(server) >= FLOOD // 2, "the flood to queue")
        assert get(server, "/jobs?limit=1", KEY_B) == 200
        wait_for(lambda: len(served) == FLOOD + 1, "the flood to be served")
    before_b = served.index(KEY_B)
    # At most: the pool's threads' pages, one more turn of A's, and what the other
    # thread finishes while B's page is made. First come, first served: >= FLOOD/2.
    assert before_b <= 2 * THREADS + 1, served

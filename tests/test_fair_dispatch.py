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
from typing import Any, cast

import pytest
from waitress.task import Task

import app as spool_app
from local.fair_queue import ANONYMOUS, FairQueue, lane_of
from local.http_limits import HttpLimits
from local.inline_dispatch import InlineTaskDispatcher, TaskDispatcher
from local.server import ChaliceWSGI, Server
from tests.apikit import KEY_A, KEY_B, installed, settings_for

THREADS = 2
# Of THREADS, how many one caller may hold (local/fair_queue.py, reserve_for).
CAP = 1
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


def test_one_key_spelt_as_a_list_of_itself_is_one_lane() -> None:
    """Found by an attacker's pass: the app reads `k, k` (the header sent twice, which
    waitress joins with ", ") and `k,k` as the one key k, so each spelling of a valid
    key was a lane of its own, with its own turn and its own cap of threads: one
    tenant spelling its key N ways held every thread of the pool."""
    lane = lane_of(Channel(KEY_A))
    for spelt in (f"{KEY_A}, {KEY_A}", f"{KEY_A},{KEY_A}", f"{KEY_A} ,{KEY_A}, {KEY_A}"):
        assert lane_of(Channel(spelt)) == lane, spelt
    # Two different keys stay a caller of their own (the app refuses them with 400).
    assert lane_of(Channel(f"{KEY_A}, {KEY_B}")) not in (lane, lane_of(Channel(KEY_B)))
    assert lane_of(Channel(",")) == lane_of(Channel(" , ")) == ANONYMOUS


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
        dispatcher.add_task(cast(Task, channel))
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
def running(
    app: Callable[..., Iterable[bytes]],
    threads: int = THREADS,
    tenant_of: Callable[[str], str | None] | None = None,
    limits: HttpLimits | None = None,
) -> Iterator[Server]:
    server = Server(
        app,
        "127.0.0.1",
        0,
        threads=threads,
        limits=limits or HttpLimits(request_timeout=30),
        tenant_of=tenant_of,
    )
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
            wait_for(lambda: queued(server) == FLOOD - CAP, "the flood to queue")
            answered: list[int] = []
            caller_b = threading.Thread(target=lambda: answered.append(get(server, "/b", "B")))
            caller_b.start()
            # The reserve's thread takes it: A holds only CAP of the pool.
            wait_for(lambda: "B" in app.started, "B's request to start")
        finally:
            app.release.set()
        caller_b.join(30)
        assert answered == [200]
        wait_for(lambda: len(app.started) == FLOOD + 1, "every request to be served")
    # B started while A's first held ones still held their threads (first come,
    # first served, it came after all twelve).
    assert app.started.index("B") == CAP, app.started


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


# -- the reserve: threads no one caller may hold -------------------------------


def test_a_lane_at_the_cap_is_skipped_until_one_of_its_requests_ends() -> None:
    queue = FairQueue(cap=2)
    for name in ("a1", "a2", "a3", "a4"):
        queue.append(Channel("key-a", name))
    lane_a, first = queue.take()
    assert first.name == "a1" and queue.take()[1].name == "a2"
    assert queue.running(lane_a) == 2 and not queue.ready() and len(queue) == 2
    queue.append(Channel("key-b", "b1"))
    assert queue.ready() and queue.take()[1].name == "b1" and not queue.ready()
    queue.done(lane_a)
    assert queue.ready() and queue.take()[1].name == "a3" and not queue.ready()
    # A shutdown's cancel pops what the cap holds back.
    assert queue and queue.popleft().name == "a4" and not queue


def test_the_reserve_leaves_a_single_thread_everything() -> None:
    from local.fair_queue import reserve_for

    assert [reserve_for(n) for n in (1, 2, 3, 4, 5, 16)] == [0, 1, 1, 1, 2, 2]


class Held(Channel):
    """A request whose service waits for `release`, noting who ran and how many at once."""

    def __init__(self, key: str | None, name: str, pool: Pool) -> None:
        super().__init__(key, name)
        self.pool = pool

    def service(self) -> None:
        pool = self.pool
        with pool.guard:
            pool.started.append(self.name)
            pool.now += 1
            pool.most = max(pool.most, pool.now)
        try:
            pool.release.wait(30)
        finally:
            with pool.guard:
                pool.now -= 1
                pool.finished.append(self.name)


class Pool:
    """A TaskDispatcher with `threads` threads and a record of what its tasks did."""

    def __init__(self, threads: int) -> None:
        self.dispatcher = TaskDispatcher()
        self.release = threading.Event()
        self.guard = threading.Lock()
        self.started: list[str] = []
        self.finished: list[str] = []
        self.now = self.most = 0
        self.dispatcher.set_thread_count(threads)

    def add(self, key: str | None, *names: str) -> list[Held]:
        tasks = [Held(key, name, self) for name in names]
        for task in tasks:
            self.dispatcher.add_task(cast(Task, task))
        return tasks

    def idle(self) -> int:
        """Threads inside the dispatcher's condition wait."""
        dispatcher = self.dispatcher
        with dispatcher.lock:
            return len(dispatcher.threads) - dispatcher.stop_count - dispatcher.active_count

    def waits(self) -> int:
        with self.dispatcher.lock:
            return int(self.dispatcher.waits)

    def close(self) -> None:
        self.release.set()
        self.dispatcher.shutdown(cancel_pending=True, timeout=10)


@contextmanager
def pool_of(threads: int) -> Iterator[Pool]:
    pool = Pool(threads)
    try:
        yield pool
    finally:
        pool.close()


def test_a_caller_holding_all_it_may_leaves_a_thread_for_another() -> None:
    with pool_of(4) as pool:
        pool.add("A", *(f"a{n}" for n in range(8)))
        wait_for(lambda: len(pool.started) == 3 and pool.idle() == 1, "A to reach its cap")
        pool.add("B", "b1")
        wait_for(lambda: "b1" in pool.started, "B's request to start")
        assert pool.finished == [] and pool.started == ["a0", "a1", "a2", "b1"]


def test_a_caller_spelling_its_key_many_ways_still_leaves_a_thread_for_another() -> None:
    with pool_of(4) as pool:
        for n, spelt in enumerate(("A", "A, A", "A,A", "A, A, A", "A,A,A", "A ,A")):
            pool.add(spelt, f"a{n}")
        wait_for(lambda: len(pool.started) == 3 and pool.idle() == 1, "A to reach its cap")
        pool.add("B", "b1")
        wait_for(lambda: "b1" in pool.started, "B's request to start")
        assert pool.finished == [] and pool.started == ["a0", "a1", "a2", "b1"]


def test_a_lone_caller_at_the_cap_still_gets_every_request_served() -> None:
    with pool_of(4) as pool:
        names = [f"a{n}" for n in range(10)]
        pool.add("A", *names)
        wait_for(lambda: len(pool.started) == 3 and pool.idle() == 1, "A to reach its cap")
        pool.release.set()
        wait_for(lambda: len(pool.finished) == 10, "A's requests to be served")
        assert pool.started == names and pool.most == 3


def test_one_thread_serves_every_caller() -> None:
    with pool_of(1) as pool:
        pool.release.set()
        pool.add("A", "a1", "a2")
        pool.add("B", "b1")
        wait_for(lambda: len(pool.finished) == 3, "every request to be served")
        assert sorted(pool.started) == ["a1", "a2", "b1"]


def test_a_thread_with_only_capped_requests_waiting_waits_instead_of_spinning() -> None:
    with pool_of(4) as pool:
        pool.add("A", "a0", "a1", "a2", "a3")
        wait_for(lambda: len(pool.started) == 3 and pool.idle() == 1, "A to reach its cap")
        before = pool.waits()
        pool.add("A", "a4")  # wakes the idle thread: it finds nothing it may take
        wait_for(lambda: pool.waits() == before + 1, "the idle thread to wait again")
        assert pool.idle() == 1 and queued_in(pool) == 2 and pool.started == ["a0", "a1", "a2"]


def queued_in(pool: Pool) -> int:
    with pool.dispatcher.lock:
        return len(pool.dispatcher.queue)


def test_a_shutdown_cancels_requests_the_cap_holds_back() -> None:
    pool = Pool(4)
    try:
        waiting = pool.add("A", "a0", "a1", "a2", "a3", "a4", "a5")[3:]
        wait_for(lambda: len(pool.started) == 3 and pool.idle() == 1, "A to reach its cap")
        # The three running hold their threads through the shutdown's wait.
        # types-waitress says int; waitress only compares and adds it to time.time().
        assert pool.dispatcher.shutdown(cancel_pending=True, timeout=0.2)  # type: ignore[arg-type]
        assert all(task.cancelled for task in waiting) and not pool.dispatcher.queue
    finally:
        pool.release.set()
    wait_for(lambda: not pool.dispatcher.threads, "the pool's threads to end")
    assert pool.started == ["a0", "a1", "a2"] and len(pool.finished) == 3


def test_another_caller_starts_while_a_flood_holds_a_real_servers_threads() -> None:
    app = GatedApp()
    with running(app, threads=4) as server:
        try:
            for _ in range(8):
                send_and_hang_up(server, "/hold", "A")
            wait_for(lambda: queued(server) == 8 - 3, "the flood to queue")
            answered: list[int] = []
            caller_b = threading.Thread(target=lambda: answered.append(get(server, "/b", "B")))
            caller_b.start()
            caller_b.join(30)
            # Answered while all of A's held requests still hold their threads.
            assert answered == [200] and app.started == ["A", "A", "A", "B"]
        finally:
            app.release.set()
        wait_for(lambda: len(app.started) == 9, "every request to be served")


def test_a_flood_spelling_its_key_many_ways_still_leaves_a_real_servers_thread() -> None:
    """The attacker's pass over real sockets: one key sent as `A`, `A, A`, `A,A`... (each
    read by the app as A) held all four threads where `A` alone holds three."""
    app = GatedApp()
    spellings = ["A", "A, A", "A,A", "A,A,A", "A ,A", "A, A, A", "A,A,A,A", "A,  A"]
    with running(app, threads=4) as server:
        try:
            for key in spellings:
                send_and_hang_up(server, "/hold", key)
            wait_for(lambda: queued(server) == len(spellings) - 3, "the flood to queue")
            answered: list[int] = []
            caller_b = threading.Thread(target=lambda: answered.append(get(server, "/b", "B")))
            caller_b.start()
            caller_b.join(30)
            assert answered == [200] and len(app.started) == 4 and app.started[3] == "B"
        finally:
            app.release.set()
        wait_for(lambda: len(app.started) == len(spellings) + 1, "every request to be served")


# -- turns per tenant, not per key ----------------------------------------------

# Two keys of tenant "acme", one of "beta" (as SPOOL_API_KEYS names them).
TENANTS = {"acme-key-one-0123456789": "acme", "acme-key-two-0123456789": "acme", "beta-key": "beta"}
A1, A2 = "acme-key-one-0123456789", "acme-key-two-0123456789"


def test_two_keys_of_one_tenant_share_one_lane() -> None:
    """Before: a lane per key, so a tenant with two keys had two turns to another's
    one, and twice the cap of the pool's threads."""
    queue = FairQueue(tenant_of=TENANTS.get)
    for key, name in ((A1, "a1"), (A2, "a2"), (A1, "a3"), ("beta-key", "b1")):
        queue.append(Channel(key, name))
    assert queue.lanes() == 2
    assert names(queue) == ["a1", "b1", "a2", "a3"]
    lane = lane_of(Channel(A1), TENANTS.get)
    assert lane == lane_of(Channel(A2), TENANTS.get) != lane_of(Channel("beta-key"), TENANTS.get)
    assert b"0123456789" not in lane  # names the tenant, holds no key


def test_a_key_no_tenant_owns_is_a_caller_of_its_own() -> None:
    """A wrong key is not resolved: its own lane (as before), never a tenant's."""
    wrong = lane_of(Channel("wrong-key-0123456789"), TENANTS.get)
    assert wrong not in (ANONYMOUS, lane_of(Channel(A1), TENANTS.get))
    assert wrong == lane_of(Channel("wrong-key-0123456789"))
    assert lane_of(Channel(None), TENANTS.get) == ANONYMOUS


def test_the_cap_is_per_tenant_across_its_keys() -> None:
    queue = FairQueue(cap=2, tenant_of=TENANTS.get)
    for key, name in ((A1, "a1"), (A2, "a2"), (A1, "a3"), (A2, "a4")):
        queue.append(Channel(key, name))
    lane, _ = queue.take()
    queue.take()
    assert queue.running(lane) == 2 and not queue.ready()  # the second key is capped too
    queue.append(Channel("beta-key", "b1"))
    assert queue.take()[1].name == "b1"


def test_a_tenants_second_key_does_not_take_the_reserve_on_a_real_server() -> None:
    """With 4 threads one tenant may hold 3; its flood split over two keys took all 4
    (3 each), and another tenant's request waited for one of the flood's to end."""
    app = GatedApp()
    with running(app, threads=4, tenant_of=TENANTS.get) as server:
        try:
            for n in range(8):
                send_and_hang_up(server, "/hold", (A1, A2)[n % 2])
            wait_for(lambda: queued(server) == 8 - 3, "the flood to queue")
            answered: list[int] = []
            caller_b = threading.Thread(
                target=lambda: answered.append(get(server, "/b", "beta-key"))
            )
            caller_b.start()
            caller_b.join(30)
            assert answered == [200] and app.started[-1] == "beta-key"
            assert len(app.started) == 4
        finally:
            app.release.set()
        wait_for(lambda: len(app.started) == 9, "every request to be served")


def test_the_reserve_is_a_setting() -> None:
    """SPOOL_HTTP_RESERVE_THREADS: threads no one tenant may hold (default: 1 of up
    to 4, 2 of more, 0 of 1); at least one thread must be left to a tenant."""
    from chalicelib.config import Settings
    from local.fair_queue import reserve_for

    def limits(value: str) -> HttpLimits:
        return HttpLimits.from_settings(Settings(extra={"SPOOL_HTTP_RESERVE_THREADS": value}))

    assert HttpLimits.from_settings(Settings()).reserve_threads is None
    assert limits("3").reserve_threads == 3
    with pytest.raises(ValueError, match="SPOOL_HTTP_RESERVE_THREADS"):
        limits("-1")
    assert [reserve_for(n, 3) for n in (1, 4, 16)] == [0, 3, 3]
    with pytest.raises(ValueError, match="SPOOL_HTTP_RESERVE_THREADS"):
        reserve_for(4, 4)  # no thread left to any tenant
    with running(GatedApp(), threads=8, limits=limits("5")) as server:
        assert server._server.task_dispatcher.queue.cap == 3


def test_spool_serve_names_a_keys_tenant_from_the_key_list_it_holds() -> None:
    """key_tenants: SPOOL_API_KEYS as parsed; from SSM only what was read already,
    so the loop thread never waits on SSM (before the first read: per key lanes)."""
    from chalicelib.api import key_source
    from chalicelib.config import Settings
    from local.fair_queue import key_tenants

    tenant_of = key_tenants(Settings(api_keys=f"{A1}=acme,{A2}=acme,beta-key-0123456789=beta"))
    assert tenant_of(A1) == tenant_of(A2) == "acme"
    assert tenant_of("beta-key-0123456789") == "beta" and tenant_of("wrong") is None

    def no_ssm(settings: Settings) -> Any:
        raise AssertionError("the loop thread read SSM")

    key_source.reset(client=no_ssm)
    try:
        from_ssm = Settings(extra={"SPOOL_API_KEYS_PARAMETER": "/spool/test/api-keys"})
        assert key_tenants(from_ssm)(A1) is None
    finally:
        key_source.reset()


def test_a_tenants_key_spelt_as_a_list_of_itself_is_the_tenants_lane() -> None:
    """Turns per tenant and one key spelt `k, k` (read by the app as k) together: the
    spelling resolves to k's tenant, not to a lane of its own beside it."""
    lane = lane_of(Channel(A1), TENANTS.get)
    for spelling in (f"{A1}, {A1}", f"{A1},{A1}", f"{A1} ,{A1},"):
        assert lane_of(Channel(spelling), TENANTS.get) == lane
    assert lane_of(Channel(f"{A1}, {A2}"), TENANTS.get) not in (lane, ANONYMOUS)


def test_spool_serve_gives_its_pool_the_tenants_of_its_keys(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The wiring: `spool serve` builds its Server with key_tenants of its settings."""
    from chalicelib import runtime as runtime_module
    from chalicelib.config import Settings
    from chalicelib.runtime import build_runtime
    from local import cli, serve

    given: dict[str, Any] = {}

    class NoServer:
        host, port, last_turn = "127.0.0.1", 1, 0.0

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            given.update(kwargs)

        def serve(self) -> None:
            pass

        def stop(self, *args: Any, **kwargs: Any) -> None:
            pass

    monkeypatch.setattr("local.server.Server", NoServer)
    monkeypatch.setattr(serve, "serve_beside_signals", lambda server: None)
    args = cli.build_parser().parse_args(["serve", "--port", "0", "--no-worker"])
    keys = f"{A1}=acme,{A2}=acme"
    rt = build_runtime(Settings(store_url="memory://", api_keys=keys))
    try:
        assert serve._serve(rt, args) == 0
    finally:
        runtime_module.reset(None)
        rt.close()
    tenant_of = given["tenant_of"]
    assert tenant_of(A1) == tenant_of(A2) == "acme" and tenant_of("wrong") is None

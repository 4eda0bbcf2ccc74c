"""A call that promises a timeout keeps it, however slowly the server answers.

httpx's timeouts bound each read, not the answer: a server that accepts the
connection and then sends its answer a byte every 0.2 s held `wait(id, timeout=0.5)`
for as long as the answer took (30 to 45 s here), and a silent one held it for the
client's timeout (10 s) on top of the wait's. Now wait() ends at its timeout (and at
most DEADLINE_GRACE after it) with WaitTimeout, and every try of a plain call ends
within the client's timeout. Real loopback sockets, 127.0.0.1 on ports the OS
picks; the sync and the async client alike.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from spool_client import AsyncClient, Client, RetryPolicy, TransportError, WaitTimeout
from tests.test_client_probe import JOB

JOB_ID = "j_" + "d" * 32
RUNNING = {**JOB, "id": JOB_ID}  # a running job's answer
BYTE_EVERY = 0.2  # the slow server's pace
TIMEOUT = 0.5  # what each wait() here is given
# It must end before this (slack for a loaded CI machine); trickling takes 20 s and more.
BOUND = TIMEOUT + 5.0
FAST = RetryPolicy(attempts=3, base=0.01, cap=0.02)


def answer(body: dict[str, Any], status: str = "200 OK") -> tuple[bytes, bytes]:
    """An HTTP/1.1 answer as (status line and headers, body)."""
    payload = json.dumps(body).encode()
    head = (
        f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(payload)}\r\n\r\n"
    ).encode()
    return head, payload


class SlowServer:
    """Accepts every connection, reads the request, then answers as `behave` says.

    behave(request_number, path) -> (head, body, how): how is "trickle" (every byte
    of head and body BYTE_EVERY apart), "trickle body" (the head at once, then the
    body a byte at a time), "silent" (nothing, the connection held open), "now"
    (all at once), or "hold" (all at once after the ?wait= the request asked for).
    """

    def __init__(self, behave: Callable[[int, str], tuple[bytes, bytes, str]]) -> None:
        self.behave = behave
        self.requests: list[str] = []
        self.stop = threading.Event()
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.1)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(1.0)
            while not self.stop.is_set():  # keep-alive: one request after another
                data = b""
                try:
                    while b"\r\n\r\n" not in data:
                        chunk = conn.recv(65536)
                        if not chunk:
                            return
                        data += chunk
                except TimeoutError:
                    continue
                except OSError:
                    return
                path = data.split(b" ", 2)[1].decode()
                with self._lock:
                    self.requests.append(path)
                    number = len(self.requests)
                head, body, how = self.behave(number, path)
                if not self._answer(conn, head, body, how, path):
                    return

    def _answer(self, conn: socket.socket, head: bytes, body: bytes, how: str, path: str) -> bool:
        try:
            if how == "silent":
                self.stop.wait()
                return False
            if how == "hold":
                wait = parse_qs(urlsplit(path).query).get("wait", ["0"])[0]
                if self.stop.wait(float(wait)):
                    return False
            if how in ("now", "hold"):
                conn.sendall(head + body)
                return True
            if how == "trickle body":
                conn.sendall(head)
            slow = head + body if how == "trickle" else body
            for i in range(len(slow)):
                if self.stop.wait(BYTE_EVERY):
                    return False
                conn.sendall(slow[i : i + 1])
            return True
        except OSError:  # the client gave up and closed the connection
            return False

    def close(self) -> None:
        self.stop.set()
        self.sock.close()


@pytest.fixture
def serve() -> Iterator[Callable[..., SlowServer]]:
    made: list[SlowServer] = []

    def start(behave: Callable[[int, str], tuple[bytes, bytes, str]]) -> SlowServer:
        made.append(SlowServer(behave))
        return made[-1]

    yield start
    for server in made:
        server.close()


def always(how: str) -> Callable[[int, str], tuple[bytes, bytes, str]]:
    head, body = answer(RUNNING)
    return lambda number, path: (head, body, how)


def first_at_once_then(how: str) -> Callable[[int, str], tuple[bytes, bytes, str]]:
    """The first long-poll answered at once (the job is running), every later one `how`."""
    head, body = answer(RUNNING)
    return lambda number, path: (head, body, "now" if number == 1 else how)


def sync_wait(url: str, **options: Any) -> Any:
    with Client(url, "k", **options) as spool:
        return spool.wait(JOB_ID, timeout=TIMEOUT)


def async_wait(url: str, **options: Any) -> Any:
    async def scenario() -> Any:
        async with AsyncClient(url, "k", **options) as spool:
            return await spool.wait(JOB_ID, timeout=TIMEOUT)

    return asyncio.run(scenario())


def sync_get(url: str, **options: Any) -> Any:
    with Client(url, "k", **options) as spool:
        return spool.get(JOB_ID)


def async_get(url: str, **options: Any) -> Any:
    async def scenario() -> Any:
        async with AsyncClient(url, "k", **options) as spool:
            return await spool.get(JOB_ID)

    return asyncio.run(scenario())


WAITS = {"sync": sync_wait, "async": async_wait}
GETS = {"sync": sync_get, "async": async_get}
SLOW = ["trickle", "trickle body", "silent"]


def timed(call: Callable[[], Any]) -> tuple[BaseException, float]:
    started = time.monotonic()
    with pytest.raises(Exception) as caught:
        call()
    return caught.value, time.monotonic() - started


@pytest.mark.parametrize("how", SLOW)
@pytest.mark.parametrize("client", list(WAITS))
def test_a_wait_on_a_slow_server_ends_at_its_timeout(serve, client: str, how: str) -> None:
    """Before: as long as the trickle took (30 to 45 s), and a TransportError after the
    client's timeout on top of the wait's (10.5 s) when silent."""
    server = serve(always(how))
    error, took = timed(lambda: WAITS[client](server.url, retry=FAST))
    assert took < BOUND, took
    assert isinstance(error, WaitTimeout), repr(error)
    assert error.job is None and error.job_id == JOB_ID
    assert str(error) == f"job {JOB_ID}: the server gave no answer within 0.5s"


@pytest.mark.parametrize("how", SLOW)
@pytest.mark.parametrize("client", list(WAITS))
def test_a_wait_that_saw_the_job_keeps_its_last_state(serve, client: str, how: str) -> None:
    server = serve(first_at_once_then(how))
    error, took = timed(lambda: WAITS[client](server.url, retry=FAST))
    assert took < BOUND, took
    assert isinstance(error, WaitTimeout), repr(error)
    assert error.job is not None and error.job.state == "running"
    assert len(server.requests) >= 2


@pytest.mark.parametrize("client", list(WAITS))
def test_a_long_poll_answered_at_the_deadline_is_still_read(serve, client: str) -> None:
    """The server holds the long-poll for the whole wait and answers just after it:
    that answer (the job's state) is awaited, not cut off at the deadline."""
    server = serve(always("hold"))
    error, took = timed(lambda: WAITS[client](server.url, retry=FAST))
    assert took < BOUND, took
    assert isinstance(error, WaitTimeout), repr(error)
    assert error.job is not None and error.job.state == "running"
    assert str(error) == f"job {JOB_ID} is still running after 0.5s"


# The sync client reads a plain call's answer on the calling thread (a thread per try
# cost 25-45% of Client.enqueue's rate): its body is bounded whole, its head per read.
PLAIN = [
    pytest.param(client, how, id=f"{client}-{how}")
    for client in GETS
    for how in SLOW
    if not (client == "sync" and how == "trickle")
]


@pytest.mark.parametrize(("client", "how"), PLAIN)
def test_each_try_of_a_plain_call_ends_within_the_clients_timeout(
    serve, client: str, how: str
) -> None:
    """Client(timeout=0.5): before, a get() from a trickling server took as long as the
    trickle (each read came in time); now each try is cut at 0.5 s and retried. (A
    silent server was cut by httpx's read timeout before too.)"""
    server = serve(always(how))
    policy = RetryPolicy(attempts=2, base=0.01, cap=0.02)
    error, took = timed(lambda: GETS[client](server.url, timeout=0.5, retry=policy))
    assert took < 2 * 0.5 + 5.0, took
    assert isinstance(error, TransportError), repr(error)
    assert error.attempts == 2
    # As docs/client.md words it, sync and async alike: before, the sync client's head
    # read said "ReadTimeout: timed out", with no word of how long it had waited.
    assert str(error).endswith(": ReadTimeout: no whole answer within 0.5s"), str(error)
    assert len(server.requests) == 2


@pytest.mark.parametrize("client", list(GETS))
def test_a_quick_answer_is_read_whole(serve, client: str) -> None:
    server = serve(always("now"))
    job = GETS[client](server.url, timeout=0.5, retry=FAST)
    assert job.id == JOB_ID and job.state == "running"


def test_the_default_try_outlasts_a_sqlite_servers_wait_for_its_write_lock() -> None:
    """Was 10 s, the same as the server's wait: its 503 "stayed locked" (nothing
    written) arrived just after the client gave up and said the server was unreachable."""
    from chalicelib.storage.sqlite_gate import PATIENCE
    from spool_client import AsyncClient, Client

    with Client("http://127.0.0.1:9", "k") as sync:
        assert sync.timeout >= PATIENCE + 5
    assert AsyncClient("http://127.0.0.1:9", "k").timeout == sync.timeout

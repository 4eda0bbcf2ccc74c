"""The client reads at most `max_answer_bytes` of an answer, over a real socket.

It read whatever a server sent into memory: a wrong --url pointing at a file
server, or a hostile one sending an endless body, could take all of it. Now the
body is read as a stream and refused (AnswerTooLarge, never retried) once it
passes the bound, or at once when its Content-Length says it would.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from spool_client import AnswerTooLarge, AsyncClient, Client, RetryPolicy
from spool_client.calls import DEFAULT_MAX_ANSWER_BYTES

LIMIT = 64 * 1024
CHUNK = b" " * 16384  # JSON whitespace: the answer would be valid JSON if it ended
JOB_ID = "j_" + "a" * 32
JOB = {"id": JOB_ID, "type": "echo", "queue": "default", "priority": 0, "state": "queued",
       "attempts": 0, "max_attempts": 3}  # fmt: skip


@dataclass
class Sender:
    """Answers every request 200 with a JSON body: `length` bytes (None: endless),
    declared in Content-Length or not. Counts what it sent and the requests."""

    length: int | None
    declare: bool
    sent: int = 0
    requests: int = 0
    stopped: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.stopped.is_set():
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn: socket.socket) -> None:
        with conn:
            try:
                conn.recv(65536)  # the request (small: a GET or a one-job POST)
                self.requests += 1
                body = json.dumps({**JOB, "pad": ""}).encode()
                head = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                if self.declare and self.length is not None:
                    head += f"Content-Length: {self.length}\r\n"
                conn.sendall((head + "Connection: close\r\n\r\n").encode())
                if self.length is not None:
                    pad = self.length - len(body)
                    # The pad goes inside the JSON string: the whole is one valid object.
                    conn.sendall(body[:-2] + b"x" * pad + body[-2:])
                    self.sent += self.length
                    return
                conn.sendall(b'{"pad": "')
                while not self.stopped.is_set():  # endless, until the client hangs up
                    conn.sendall(CHUNK)
                    self.sent += len(CHUNK)
            except OSError:
                return

    def close(self) -> None:
        self.stopped.set()
        self.listener.close()


@pytest.fixture
def senders() -> Iterator[list[Sender]]:
    made: list[Sender] = []
    yield made
    for sender in made:
        sender.close()


def start(made: list[Sender], length: int | None, declare: bool) -> Sender:
    sender = Sender(length, declare)
    made.append(sender)
    return sender


CASES = [(None, False), (10 * LIMIT, False), (10 * LIMIT, True)]
IDS = ["endless", "long-undeclared", "long-declared"]


@pytest.mark.timeout(60)
@pytest.mark.parametrize(("length", "declare"), CASES, ids=IDS)
def test_the_sync_client_refuses_an_answer_past_its_bound(
    senders: list[Sender], length: int | None, declare: bool
) -> None:
    sender = start(senders, length, declare)
    retry = RetryPolicy(attempts=3)
    client = Client(sender.url, "k" * 32, retry=retry, max_answer_bytes=LIMIT)
    with client as spool, pytest.raises(AnswerTooLarge) as refused:
        spool.get(JOB_ID)
    assert refused.value.limit == LIMIT
    assert f"more than {LIMIT} bytes" in str(refused.value) and "max_answer_bytes" in str(
        refused.value
    )
    assert sender.requests == 1  # not retried: the same server would send the same
    # Read as it came: an endless body was cut a little past the bound, not read on.
    assert sender.sent < 100 * LIMIT or length is not None


@pytest.mark.timeout(60)
@pytest.mark.parametrize(("length", "declare"), CASES, ids=IDS)
def test_the_async_client_refuses_an_answer_past_its_bound(
    senders: list[Sender], length: int | None, declare: bool
) -> None:
    sender = start(senders, length, declare)

    async def main() -> None:
        retry = RetryPolicy(attempts=3)
        async with AsyncClient(sender.url, "k" * 32, retry=retry, max_answer_bytes=LIMIT) as spool:
            with pytest.raises(AnswerTooLarge) as refused:
                await spool.get(JOB_ID)
        assert refused.value.limit == LIMIT

    asyncio.run(main())
    assert sender.requests == 1


@pytest.mark.timeout(60)
def test_the_wait_deadline_path_is_bounded_too(senders: list[Sender]) -> None:
    """wait() reads its long-polls on a thread of their own (Client._exchange)."""
    sender = start(senders, None, False)
    client = Client(sender.url, "k" * 32, max_answer_bytes=LIMIT)
    with client as spool, pytest.raises(AnswerTooLarge):
        spool.wait(JOB_ID, timeout=30)


@pytest.mark.timeout(60)
def test_an_answer_within_the_bound_is_read_whole(senders: list[Sender]) -> None:
    sender = start(senders, LIMIT, True)  # exactly the bound: allowed
    with Client(sender.url, "k" * 32, max_answer_bytes=LIMIT) as spool:
        job = spool.get(JOB_ID)
    assert job.id == JOB_ID

    async def main() -> None:
        async with AsyncClient(sender.url, "k" * 32, max_answer_bytes=LIMIT) as spool:
            assert (await spool.get(JOB_ID)).id == JOB_ID

    asyncio.run(main())


def test_the_default_bound_and_bad_values() -> None:
    assert DEFAULT_MAX_ANSWER_BYTES == 64 * 1024 * 1024
    with Client("http://127.0.0.1:9", "k" * 32) as spool:
        assert spool.max_answer_bytes == DEFAULT_MAX_ANSWER_BYTES
    for bad in (0, -1, 1.5, True, "64"):
        with pytest.raises(ValueError, match="max_answer_bytes"):
            Client("http://127.0.0.1:9", "k" * 32, max_answer_bytes=bad)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="max_answer_bytes"):
            AsyncClient("http://127.0.0.1:9", "k" * 32, max_answer_bytes=bad)  # type: ignore[arg-type]

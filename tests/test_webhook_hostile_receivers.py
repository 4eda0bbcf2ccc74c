"""Receivers that answer oddly, over a raw loopback socket: what a delivery makes of a
2xx whose body never ends, a body far larger than anything read, and a name whose
DNS answer changes between deliveries (the connection goes to the checked address)."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Callable, Iterator

import pytest

from chalicelib.clock import FakeClock
from chalicelib.config import Settings
from chalicelib.models import Completion, JobState
from chalicelib.storage.memory import MemoryStore
from chalicelib.webhooks import signing
from chalicelib.webhooks.deliver import Deliverer
from tests.canned_http import serve_each
from tests.factories import new_job, token

SECRET = signing.new_secret()


def settings(**extra: str) -> Settings:
    values = {
        "SPOOL_WEBHOOKS": json.dumps({"acme": {"secrets": [SECRET]}}),
        "SPOOL_WEBHOOK_ALLOW_PRIVATE": "true",
        "SPOOL_WEBHOOK_TIMEOUT": "2",
        "SPOOL_WEBHOOK_MAX_ATTEMPTS": "3",
        **extra,
    }
    return Settings(extra=values)


class RawReceiver:
    """Reads each request's head and body, writes `answer`, then `after` (a callable
    given the socket), and keeps the connection open until the test ends."""

    def __init__(
        self, answer: bytes, after: Callable[[socket.socket, threading.Event], None] | None = None
    ) -> None:
        self.answer = answer
        self.after = after
        self.requests = 0
        self.done = threading.Event()
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        serve_each(self.sock, self._one)

    def _one(self, conn: socket.socket) -> None:
        with conn:
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                data += chunk
            head, _, rest = data.partition(b"\r\n\r\n")
            length = next(
                int(line.split(b":", 1)[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            )
            while len(rest) < length:
                rest += conn.recv(65536)
            self.requests += 1
            try:
                conn.sendall(self.answer)
                if self.after is not None:
                    self.after(conn, self.done)
            except OSError:
                return
            self.done.wait(30)  # never closes while the test runs

    def close(self) -> None:
        self.done.set()
        self.sock.close()


@pytest.fixture
def store() -> MemoryStore:
    return MemoryStore(FakeClock())


def finished_job(store: MemoryStore, url: str) -> str:
    clock = store.clock
    assert isinstance(clock, FakeClock)
    job = store.add([new_job(clock, tenant="acme", callback_url=url)])[0].job
    [running] = store.claim(1, 30)
    store.finish([Completion(job.id, token(running), JobState.SUCCEEDED, result=1)])
    return job.id


@pytest.fixture
def stalled_body() -> Iterator[RawReceiver]:
    """Answers 200 with a Content-Length it never sends, and never closes."""
    receiver = RawReceiver(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n")
    yield receiver
    receiver.close()


def test_a_2xx_whose_body_never_comes_is_delivered(
    store: MemoryStore, stalled_body: RawReceiver
) -> None:
    """The status line is the receiver's answer: a 200 is taken as delivered, not sent
    again (and again, up to the last attempt, then marked failed) because the body a
    webhook never uses did not arrive before the timeout."""
    job_id = finished_job(store, f"http://127.0.0.1:{stalled_body.port}/hooks")
    Deliverer(store, settings()).drain()
    [d] = store.webhooks(job_id)
    assert (d.state, d.last_error) == ("delivered", None)
    assert stalled_body.requests == 1


def _endless(conn: socket.socket, done: threading.Event) -> None:
    chunk = b"x" * 65536
    while not done.is_set():
        conn.sendall(chunk)


def test_a_huge_2xx_body_is_not_read(store: MemoryStore) -> None:
    """A receiver streaming an endless body: the delivery is made and recorded without
    reading it all (it would never end) or waiting out the timeout."""
    receiver = RawReceiver(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n", _endless)
    try:
        job_id = finished_job(store, f"http://127.0.0.1:{receiver.port}/hooks")
        Deliverer(store, settings()).drain()
        [d] = store.webhooks(job_id)
        assert (d.state, d.last_error) == ("delivered", None)
    finally:
        receiver.close()


def test_a_retry_status_with_a_stalled_body_keeps_its_retry_after(store: MemoryStore) -> None:
    """A 503 whose body never comes: retried, its status said, its Retry-After honoured."""
    receiver = RawReceiver(b"HTTP/1.1 503 No\r\nRetry-After: 600\r\nContent-Length: 50\r\n\r\n")
    try:
        job_id = finished_job(store, f"http://127.0.0.1:{receiver.port}/hooks")
        before = store.clock.now()
        Deliverer(store, settings(SPOOL_WEBHOOK_BACKOFF="1")).drain()
        [d] = store.webhooks(job_id)
        assert d.state == "pending" and d.last_error == "HTTP 503 from the receiver"
        assert d.next_at is not None
        assert (d.next_at - before).total_seconds() >= 600
    finally:
        receiver.close()


def test_the_connection_goes_to_the_address_checked(store: MemoryStore) -> None:
    """DNS rebinding: a name whose answer changes after the check reaches the address
    the guard checked, never a second answer (the resolver is asked once per attempt)."""
    receiver = RawReceiver(b"HTTP/1.1 204 No Content\r\n\r\n")
    answers = iter([["127.0.0.1"], ["169.254.169.254"]])
    asked: list[str] = []

    def rebinding(host: str, port: int) -> list[str]:
        asked.append(host)
        return next(answers)

    try:
        job_id = finished_job(store, f"http://hooks.example.com:{receiver.port}/x")
        Deliverer(store, settings(), resolver=rebinding).drain()
        [d] = store.webhooks(job_id)
        assert d.state == "delivered" and receiver.requests == 1
        assert asked == ["hooks.example.com"]
    finally:
        receiver.close()


def test_a_slow_delivery_ends_by_its_timeout(store: MemoryStore) -> None:
    """A receiver that takes the request and never answers: the attempt ends (retried)
    by SPOOL_WEBHOOK_TIMEOUT, not when the receiver chooses to close."""
    receiver = RawReceiver(b"")
    try:
        job_id = finished_job(store, f"http://127.0.0.1:{receiver.port}/hooks")
        Deliverer(store, settings(SPOOL_WEBHOOK_TIMEOUT="1")).drain()
        [d] = store.webhooks(job_id)
        # Ended by the timeout (a receiver closing after 30 s would say it disconnected).
        assert d.state == "pending" and "time" in (d.last_error or "").lower(), d.last_error
    finally:
        receiver.close()

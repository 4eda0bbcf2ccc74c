"""send_email against an SMTP server whose reply never ends.

smtplib reads a multi-line reply ("250-...") line by line, each line kept, until
a line without the dash: a server answering EHLO with "250-" lines forever had
every one of them kept in the worker's memory until the job's deadline (at
loopback speed, gigabytes within the 60 s). A reply is now read up to
MAX_REPLY_BYTES; past that the attempt ends (retried, as for a dropped
connection) with the reason, and the connection is closed. A single line over
smtplib's 8192 bytes, which smtplib reported as a "500" the server never sent
(dead), is retried the same way.

Against a raw socket server on 127.0.0.1 that sends up to 64 MiB of "250-" lines
and sees the worker hang up."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest

from chalicelib.builtin import email as mail
from chalicelib.clock import FakeClock
from chalicelib.handlers import registry
from chalicelib.models import JobState
from chalicelib.service import EnqueueRequest, Service
from chalicelib.storage.memory import MemoryStore
from chalicelib.worker import Worker, WorkerConfig
from tests.test_email import ctx_for, point_at, send

LINE = b"250-" + b"x" * 1000 + b"\r\n"
CEILING = 64 * 1024 * 1024  # the server stops here even if the client never hangs up


class EndlessReplyServer:
    """Greets, then answers EHLO with continuation lines until the client goes away
    (or CEILING is sent, then holds the connection open without ending the reply)."""

    def __init__(self, reply_to: bytes, flood: bytes = LINE * 64) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._reply_to = reply_to
        self._chunk = flood
        self.sent = 0
        self.done = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        conn, _ = self._listener.accept()
        try:
            with conn:
                conn.sendall(b"220 endless.test ESMTP\r\n")
                reader = conn.makefile("rb")
                while line := reader.readline():
                    if line[:4].upper() == self._reply_to:
                        self._flood(conn)
                        return
                    conn.sendall(b"250 ok\r\n")
        except OSError:
            pass
        finally:
            self.done.set()

    def _flood(self, conn: socket.socket) -> None:
        while self.sent < CEILING:
            conn.sendall(self._chunk)
            self.sent += len(self._chunk)
        conn.recv(1)  # the client's close ends this

    def close(self) -> None:
        self._listener.close()


@pytest.fixture(params=[b"EHLO", b"MAIL", b"RCPT"])
def endless(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> Iterator[EndlessReplyServer]:
    server = EndlessReplyServer(request.param)
    point_at(monkeypatch, server.port)
    try:
        yield server
    finally:
        server.close()


@pytest.mark.timeout(30)
def test_an_endless_multiline_reply_ends_the_attempt_early(endless: EndlessReplyServer) -> None:
    ctx = ctx_for()
    ctx.deadline = time.monotonic() + 8
    with pytest.raises(mail.TemporaryFailure, match=r"reply .* is longer than the limit"):
        send(ctx)
    # Ended by the limit, not by the deadline (which the flood used to run into).
    assert time.monotonic() < ctx.deadline - 4
    assert endless.done.wait(5)  # the worker hung up


def test_an_ordinary_multiline_ehlo_reply_is_read_whole() -> None:
    """The limit leaves room for any real EHLO answer: 40 extension lines here."""
    assert len(b"".join(b"250-EXTENSION-%02d PARAMETER\r\n" % i for i in range(40))) < (
        mail.MAX_REPLY_BYTES
    )


@pytest.mark.parametrize("verb", [b"EHLO", b"RCPT"])
def test_an_overlong_reply_line_is_retried_not_blamed_on_the_server(
    verb: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    """smtplib refuses a reply line over 8192 bytes by raising the reply it never got,
    "500 Line too long.": the job went dead as if the server had refused it. It is the
    same fault as a reply that never ends: retried, with what happened."""
    server = EndlessReplyServer(verb, flood=b"250 " + b"y" * 20000 + b"\r\n")
    point_at(monkeypatch, server.port)
    try:
        with pytest.raises(mail.TemporaryFailure, match=r"line .* longer than"):
            send(ctx_for())
    finally:
        server.close()


@pytest.mark.timeout(60)
def test_through_the_worker_an_endless_reply_leaves_the_job_retrying_with_the_reason(
    monkeypatch: pytest.MonkeyPatch, clock: FakeClock
) -> None:
    server = EndlessReplyServer(b"EHLO")
    point_at(monkeypatch, server.port)
    store = MemoryStore(clock)
    payload = {"to": ["alice@example.org"], "subject": "s", "text": "t"}
    try:
        [added] = Service(store, registry).enqueue(
            [EnqueueRequest(type="send_email", payload=payload)], tenant="t1"
        )
        Worker(store, registry, WorkerConfig(concurrency=1)).drain()
    finally:
        server.close()
    job = store.get(added.job.id)
    assert job is not None and job.state is JobState.RETRYING
    assert job.attempts == 1 and "longer than the limit" in (job.last_error or "")

"""send_email: a message the server accepted is never marked failed or sent twice.

Against real servers on 127.0.0.1 (aiosmtpd, and a raw socket server for a server
that drips its banner), ephemeral ports only."""

from __future__ import annotations

import dataclasses
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from chalicelib.builtin import email as mail
from chalicelib.clock import FakeClock
from chalicelib.handlers import JobContext, Registry, registry
from chalicelib.models import JobState
from chalicelib.service import EnqueueRequest, Service
from chalicelib.storage.memory import MemoryStore
from chalicelib.worker import Worker, WorkerConfig
from tests.test_email import Mailbox, ctx_for, point_at, send, smtp_server


# -- QUIT is not part of the delivery --------------------------------------------------
@dataclass
class RudeAtQuit(Mailbox):
    quit_reply: str = "500 5.5.1 what"

    async def handle_QUIT(self, server: Any, session: Any, envelope: Any) -> str:
        return self.quit_reply


@pytest.mark.parametrize("quit_reply", ["500 5.5.1 what", "421 4.3.2 shutting down"])
def test_a_message_accepted_before_a_bad_quit_reply_is_a_success(
    monkeypatch: pytest.MonkeyPatch, quit_reply: str
) -> None:
    mailbox = RudeAtQuit(quit_reply=quit_reply)
    with smtp_server(mailbox) as controller:
        point_at(monkeypatch, controller.port)
        result = send(to=["alice@example.org"])
    assert result["accepted"] == ["alice@example.org"]
    assert len(mailbox.received) == 1


def test_through_the_worker_a_bad_quit_reply_leaves_the_job_succeeded_and_sent_once(
    monkeypatch: pytest.MonkeyPatch, clock: FakeClock
) -> None:
    mailbox = RudeAtQuit(quit_reply="421 4.3.2 shutting down")
    store = MemoryStore(clock)
    with smtp_server(mailbox) as controller:
        point_at(monkeypatch, controller.port)
        [added] = Service(store, registry).enqueue(
            [
                EnqueueRequest(
                    type="send_email", payload={"to": "a@example.org", "subject": "s", "text": "t"}
                )
            ],
            tenant="t1",
        )
        Worker(store, registry, WorkerConfig(concurrency=1)).drain()
    job = store.get(added.job.id)
    assert job is not None and job.state is JobState.SUCCEEDED, job
    assert len(mailbox.received) == 1


# -- the whole conversation ends by the job's deadline -------------------------------------
BANNER = b"220 drip.test ESMTP ready, one byte at a time\r\n"


@dataclass
class DripServer:
    """A minimal SMTP server: its first connection gets the banner one byte every
    `pause` seconds (each read well under SPOOL_SMTP_TIMEOUT); later ones are served
    at once. Records the Message-ID of every message it accepts, by connection."""

    pause: float = 0.25
    accepted: list[tuple[int, str]] = field(default_factory=list)
    first_done: threading.Event = field(default_factory=threading.Event)
    port: int = 0

    def __post_init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.2)
        self.port = self._listener.getsockname()[1]
        self._stop = threading.Event()
        self._count = 0

    def start(self) -> None:
        threading.Thread(target=self._accept, daemon=True).start()

    def stop(self) -> None:
        self._stop.set()
        self._listener.close()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except (TimeoutError, OSError):
                continue
            self._count += 1
            threading.Thread(target=self._serve, args=(conn, self._count), daemon=True).start()

    def _serve(self, conn: socket.socket, n: int) -> None:
        try:
            with conn:
                self._converse(conn, n)
        except OSError:
            pass
        finally:
            if n == 1:
                self.first_done.set()

    def _converse(self, conn: socket.socket, n: int) -> None:
        if n == 1:
            for byte in BANNER:
                conn.sendall(bytes([byte]))
                time.sleep(self.pause)
        else:
            conn.sendall(BANNER)
        reader = conn.makefile("rb")
        while line := reader.readline():
            verb = line[:4].upper()
            if verb in (b"EHLO", b"HELO"):
                conn.sendall(b"250-drip.test\r\n250 8BITMIME\r\n")
            elif verb == b"DATA":
                conn.sendall(b"354 go ahead\r\n")
                lines = []
                while (body := reader.readline()) not in (b".\r\n", b""):
                    lines.append(body)
                mid = [x.decode().strip() for x in lines if x.lower().startswith(b"message-id")]
                self.accepted.append((n, mid[0] if mid else ""))
                conn.sendall(b"250 queued\r\n")
            elif verb == b"QUIT":
                conn.sendall(b"221 bye\r\n")
                return
            else:
                conn.sendall(b"250 ok\r\n")


@pytest.fixture
def drip(monkeypatch: pytest.MonkeyPatch) -> Iterator[DripServer]:
    server = DripServer()
    server.start()
    point_at(monkeypatch, server.port)  # SPOOL_SMTP_TIMEOUT=10: longer than each pause
    try:
        yield server
    finally:
        server.stop()


def test_a_server_dripping_its_replies_cannot_hold_an_attempt_past_its_deadline(
    drip: DripServer,
) -> None:
    ctx = ctx_for()
    ctx.deadline = time.monotonic() + 1.5
    started = time.monotonic()
    with pytest.raises(mail.TemporaryFailure, match="time"):
        send(ctx)
    assert time.monotonic() - started < 3.0  # the banner alone would take ~12 s
    assert drip.first_done.wait(5)  # the connection was dropped, nothing sent
    assert drip.accepted == []


def test_an_attempt_the_worker_abandoned_never_delivers_after_its_retry(
    drip: DripServer, clock: FakeClock
) -> None:
    short = Registry()
    short.register(dataclasses.replace(registry.get("send_email"), timeout=1.5))
    store = MemoryStore(clock)
    [added] = Service(store, short).enqueue(
        [
            EnqueueRequest(
                type="send_email", payload={"to": "a@example.org", "subject": "s", "text": "t"}
            )
        ],
        tenant="t1",
    )
    Worker(store, short, WorkerConfig(concurrency=1)).drain()
    waiting = store.get(added.job.id)
    assert waiting is not None and waiting.state is JobState.RETRYING, waiting
    clock.set(waiting.run_at)
    Worker(store, short, WorkerConfig(concurrency=1)).drain()
    done = store.get(added.job.id)
    assert done is not None and done.state is JobState.SUCCEEDED, done
    # The first attempt's connection ends without a message (before the fix it went
    # on dripping and delivered the same Message-ID a second time, ~12 s later).
    assert drip.first_done.wait(20)
    assert [n for n, _ in drip.accepted] == [2]


# -- an abandoned attempt sends no DATA ---------------------------------------------------
@dataclass
class CancelsAtRcpt(Mailbox):
    """Plays the worker giving the attempt up while the server considers RCPT."""

    ctx: JobContext | None = None

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: Any
    ) -> str:
        assert self.ctx is not None
        self.ctx.cancelled.set()
        return await super().handle_RCPT(server, session, envelope, address, options)


def test_an_attempt_cancelled_before_data_does_not_send_the_message(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ctx = ctx_for()
    mailbox = CancelsAtRcpt(ctx=ctx)
    with smtp_server(mailbox) as controller:
        point_at(monkeypatch, controller.port)
        with pytest.raises(mail.TemporaryFailure, match="abandoned"):
            send(ctx)
    assert mailbox.received == []


def test_a_cancelled_attempt_does_not_even_connect(monkeypatch: pytest.MonkeyPatch) -> None:
    ctx = ctx_for()
    ctx.cancelled.set()
    mailbox = Mailbox()
    with smtp_server(mailbox) as controller:
        point_at(monkeypatch, controller.port)
        with pytest.raises(mail.TemporaryFailure, match="abandoned"):
            send(ctx)
    assert mailbox.received == []

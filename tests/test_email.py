"""send_email against a real SMTP server (aiosmtpd) on 127.0.0.1, ephemeral ports only."""

from __future__ import annotations

import contextlib
import email
import email.message
import email.policy
import socket
import ssl
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from pydantic import ValidationError

from chalicelib.builtin import email as mail
from chalicelib.clock import FakeClock
from chalicelib.errors import PermanentError
from chalicelib.handlers import JobContext, registry
from chalicelib.ids import new_job_id
from chalicelib.models import Job, JobState
from chalicelib.service import EnqueueRequest, Service
from chalicelib.storage.memory import MemoryStore
from chalicelib.worker import Worker, WorkerConfig


# -- the server ------------------------------------------------------------------------
@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    content: bytes
    tls: bool
    login: Any

    @property
    def message(self) -> email.message.EmailMessage:
        parsed = email.message_from_bytes(self.content, policy=email.policy.default)
        assert isinstance(parsed, email.message.EmailMessage)
        return parsed


@dataclass
class Mailbox:
    """An aiosmtpd handler that keeps what it accepts and answers planned codes."""

    received: list[Received] = field(default_factory=list)
    rcpt_replies: dict[str, str] = field(default_factory=dict)
    data_reply: str | None = None

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: Any
    ) -> str:
        planned = self.rcpt_replies.get(address)
        if planned:
            return planned
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.data_reply:
            return self.data_reply
        self.received.append(
            Received(
                envelope.mail_from,
                list(envelope.rcpt_tos),
                envelope.original_content or envelope.content,
                session.ssl is not None,
                session.auth_data,
            )
        )
        return "250 Message accepted for delivery"


class LoopbackController(Controller):
    """Listens on 127.0.0.1 on a port the kernel picks (no port guessing, no races)."""

    def __init__(self, handler: Any, **kwargs: Any) -> None:
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.bind(("127.0.0.1", 0))
        port = self._listener.getsockname()[1]
        # server_hostname avoids aiosmtpd looking up our FQDN (a DNS query).
        super().__init__(
            handler, hostname="127.0.0.1", port=port, server_hostname="mx.test", **kwargs
        )

    def _create_server(self) -> Any:
        return self.loop.create_server(
            self._factory_invoker, sock=self._listener, ssl=self.ssl_context
        )


@contextlib.contextmanager
def smtp_server(mailbox: Mailbox, **kwargs: Any) -> Iterator[LoopbackController]:
    controller = LoopbackController(mailbox, **kwargs)
    controller.start()
    try:
        yield controller
    finally:
        controller.stop()


@pytest.fixture
def mailbox() -> Mailbox:
    return Mailbox()


@pytest.fixture
def server(mailbox: Mailbox, monkeypatch: pytest.MonkeyPatch) -> Iterator[LoopbackController]:
    with smtp_server(mailbox) as controller:
        point_at(monkeypatch, controller.port)
        yield controller


def point_at(monkeypatch: pytest.MonkeyPatch, port: int, **extra: str) -> None:
    monkeypatch.setenv("SPOOL_SMTP_HOST", "127.0.0.1")
    monkeypatch.setenv("SPOOL_SMTP_PORT", str(port))
    monkeypatch.setenv("SPOOL_SMTP_FROM", "Spool <noreply@example.com>")
    monkeypatch.setenv("SPOOL_SMTP_LOCAL_HOSTNAME", "worker.test")  # no FQDN lookup
    monkeypatch.setenv("SPOOL_SMTP_TIMEOUT", "10")
    for name, value in extra.items():
        monkeypatch.setenv(name, value)


def ctx_for(job_id: str | None = None) -> JobContext:
    now = FakeClock().now()
    job = Job(
        id=job_id or new_job_id(), type="send_email", run_at=now, created_at=now, updated_at=now
    )
    return JobContext(job, time.monotonic() + 30)


def send(ctx: JobContext | None = None, /, **fields: Any) -> dict[str, Any]:
    payload = mail.EmailPayload.model_validate(
        {"to": "alice@example.org", "subject": "Hi", "text": "hello", **fields}
    )
    result: dict[str, Any] = mail.send_email(payload, ctx or ctx_for())
    return result


# -- delivery ------------------------------------------------------------------------
def test_the_message_arrives_with_the_right_headers_and_envelope(
    server: LoopbackController, mailbox: Mailbox
) -> None:
    ctx = ctx_for()
    result = send(
        ctx,
        to=["Alice Example <alice@example.org>", "bob@example.org"],
        cc=["carol@example.org"],
        bcc=["dave@example.net"],
        reply_to="support@example.com",
        subject="Your report \u2713 (caf\u00e9)",
        text="plain body",
        html="<p>html body</p>",
        headers={"List-Unsubscribe": "<mailto:unsub@example.com>", "X-Campaign": "spring"},
    )
    [got] = mailbox.received
    message = got.message
    assert got.mail_from == "noreply@example.com"
    assert sorted(got.rcpt_tos) == sorted(
        ["alice@example.org", "bob@example.org", "carol@example.org", "dave@example.net"]
    )
    assert message["From"] == "Spool <noreply@example.com>"
    assert message["To"] == "Alice Example <alice@example.org>, bob@example.org"
    assert message["Cc"] == "carol@example.org"
    assert message["Bcc"] is None  # blind copies travel in the envelope only
    assert message["Reply-To"] == "support@example.com"
    assert message["Subject"] == "Your report \u2713 (caf\u00e9)"
    assert message["Message-ID"] == f"<{ctx.job.id}@example.com>"
    assert message["X-Spool-Job-Id"] == ctx.job.id
    assert message["List-Unsubscribe"] == "<mailto:unsub@example.com>"
    assert message["X-Campaign"] == "spring"
    assert message["Date"] is not None
    assert message.get_content_type() == "multipart/alternative"
    parts = [(p.get_content_type(), p.get_content().strip()) for p in message.iter_parts()]
    assert parts == [("text/plain", "plain body"), ("text/html", "<p>html body</p>")]
    assert result["message_id"] == message["Message-ID"]
    assert result["refused"] == {}
    assert len(result["accepted"]) == 4


@pytest.mark.parametrize(
    ("bodies", "content_type"),
    [({"text": "only text"}, "text/plain"), ({"text": None, "html": "<b>x</b>"}, "text/html")],
)
def test_a_single_body_is_sent_as_a_single_part(
    server: LoopbackController, mailbox: Mailbox, bodies: dict[str, Any], content_type: str
) -> None:
    send(**bodies)
    message = mailbox.received[0].message
    assert message.get_content_type() == content_type
    assert not message.is_multipart()


def test_a_retried_send_carries_the_same_message_id(
    server: LoopbackController, mailbox: Mailbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SPOOL_SMTP_MESSAGE_ID_DOMAIN", "mail.spool.test")
    job_id = new_job_id()
    send(ctx_for(job_id))
    send(ctx_for(job_id))
    send(ctx_for())
    ids = [r.message["Message-ID"] for r in mailbox.received]
    assert ids[0] == ids[1] == f"<{job_id}@mail.spool.test>"
    assert ids[2] != ids[0]


# -- what the server says -----------------------------------------------------------------
def test_a_4xx_reply_is_retried_and_a_5xx_reply_is_permanent(
    server: LoopbackController, mailbox: Mailbox
) -> None:
    mailbox.data_reply = "451 4.3.0 Try again later"
    with pytest.raises(mail.TemporaryFailure, match="451"):
        send()
    mailbox.data_reply = "554 5.7.1 Message rejected"
    with pytest.raises(PermanentError, match="554"):
        send()
    mailbox.data_reply = None
    mailbox.rcpt_replies["alice@example.org"] = "450 4.2.1 Mailbox busy"
    with pytest.raises(mail.TemporaryFailure, match="450"):
        send()
    mailbox.rcpt_replies["alice@example.org"] = "550 5.1.1 No such user"
    with pytest.raises(PermanentError, match="550"):
        send()
    assert mailbox.received == []


def test_recipients_refused_one_by_one_are_reported_not_retried(
    server: LoopbackController, mailbox: Mailbox
) -> None:
    mailbox.rcpt_replies["ghost@example.org"] = "550 5.1.1 No such user"
    result = send(to=["alice@example.org", "ghost@example.org"])
    assert result["accepted"] == ["alice@example.org"]
    assert result["refused"]["ghost@example.org"]["code"] == 550
    assert mailbox.received[0].rcpt_tos == ["alice@example.org"]


def test_an_unreachable_server_is_retried(monkeypatch: pytest.MonkeyPatch) -> None:
    closed = socket.create_server(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()
    point_at(monkeypatch, port)
    with pytest.raises(mail.TemporaryFailure, match="ConnectionRefused"):
        send()


def test_through_the_worker_4xx_retries_with_backoff_then_5xx_goes_dead(
    server: LoopbackController, mailbox: Mailbox, clock: FakeClock
) -> None:
    store = MemoryStore(clock)
    [added] = Service(store, registry).enqueue(
        [
            EnqueueRequest(
                type="send_email",
                payload={"to": ["alice@example.org"], "subject": "s", "text": "t"},
            )
        ],
        tenant="t1",
    )
    mailbox.data_reply = "451 4.3.0 Greylisted"
    Worker(store, registry, WorkerConfig(concurrency=1)).drain()
    waiting = store.get(added.job.id)
    assert waiting is not None and waiting.state is JobState.RETRYING
    assert waiting.attempts == 1 and "451" in (waiting.last_error or "")
    assert waiting.run_at >= clock.now()
    mailbox.data_reply = "554 5.7.1 Rejected for policy reasons"
    clock.set(waiting.run_at)
    Worker(store, registry, WorkerConfig(concurrency=1)).drain()
    dead = store.get(added.job.id)
    assert dead is not None and dead.state is JobState.DEAD
    assert dead.attempts == 2 and "554" in (dead.last_error or "")
    assert dead.max_attempts > 2  # dead because the reply was permanent, not exhausted


# -- TLS and credentials ------------------------------------------------------------------
@pytest.fixture
def tls_files(tmp_path: Path) -> tuple[ssl.SSLContext, str]:
    import trustme

    ca = trustme.CA()
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert("127.0.0.1").configure_cert(server_context)
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    return server_context, str(ca_file)


def _authenticator(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> Any:
    ok = isinstance(data, LoginPassword) and (data.login, data.password) == (b"spool", b"s3cret")
    return AuthResult(success=ok, handled=False, auth_data=data.login if ok else None)


def test_starttls_and_login_with_credentials_from_settings(
    mailbox: Mailbox, monkeypatch: pytest.MonkeyPatch, tls_files: tuple[ssl.SSLContext, str]
) -> None:
    server_context, ca_file = tls_files
    with smtp_server(
        mailbox,
        tls_context=server_context,
        require_starttls=True,
        auth_required=True,
        authenticator=_authenticator,
    ) as controller:
        point_at(
            monkeypatch,
            controller.port,
            SPOOL_SMTP_STARTTLS="true",
            SPOOL_SMTP_USERNAME="spool",
            SPOOL_SMTP_PASSWORD="s3cret",
            SPOOL_SMTP_CA_FILE=ca_file,
        )
        send()
        [got] = mailbox.received
        assert got.tls is True
        assert got.login == b"spool"
        monkeypatch.setenv("SPOOL_SMTP_PASSWORD", "wrong")
        with pytest.raises(PermanentError, match="535"):
            send()
        monkeypatch.setenv("SPOOL_SMTP_PASSWORD", "s3cret")
        monkeypatch.delenv("SPOOL_SMTP_CA_FILE")
        with pytest.raises(PermanentError, match="certificate"):
            send()
    assert len(mailbox.received) == 1


def test_starttls_required_by_settings_but_not_offered_is_permanent(
    server: LoopbackController, mailbox: Mailbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SPOOL_SMTP_STARTTLS", "true")
    with pytest.raises(PermanentError, match="STARTTLS"):
        send()
    assert mailbox.received == []


def test_a_server_that_requires_starttls_refuses_a_plain_session(
    mailbox: Mailbox, monkeypatch: pytest.MonkeyPatch, tls_files: tuple[ssl.SSLContext, str]
) -> None:
    with smtp_server(mailbox, tls_context=tls_files[0], require_starttls=True) as controller:
        point_at(monkeypatch, controller.port)
        with pytest.raises(PermanentError, match="530"):
            send()


def test_credentials_are_never_sent_without_tls(
    server: LoopbackController, mailbox: Mailbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SPOOL_SMTP_USERNAME", "spool")
    monkeypatch.setenv("SPOOL_SMTP_PASSWORD", "s3cret")
    with pytest.raises(PermanentError, match="in clear"):
        send()
    assert mailbox.received == []


# -- settings and payloads -------------------------------------------------------------
def test_senders_come_from_settings_and_are_restricted_when_configured(
    server: LoopbackController, mailbox: Mailbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    send(**{"from": "Team <team@example.com>"})
    assert mailbox.received[-1].mail_from == "team@example.com"
    # Unset, a payload may send only from SPOOL_SMTP_FROM's domain: a tenant cannot
    # have the operator's relay send as somebody else's.
    with pytest.raises(PermanentError, match=r"domain of SPOOL_SMTP_FROM \(@example.com\)"):
        send(**{"from": "ceo@bank.test"})
    monkeypatch.setenv("SPOOL_SMTP_ALLOWED_FROM", "@example.com, boss@corp.test")
    send(**{"from": "boss@corp.test"})
    with pytest.raises(PermanentError, match="not in SPOOL_SMTP_ALLOWED_FROM"):
        send(**{"from": "ceo@bank.test"})
    monkeypatch.setenv("SPOOL_SMTP_ALLOWED_FROM", "*")
    send(**{"from": "ceo@bank.test"})
    monkeypatch.delenv("SPOOL_SMTP_FROM")
    monkeypatch.delenv("SPOOL_SMTP_ALLOWED_FROM")
    with pytest.raises(PermanentError, match="no sender"):
        send()
    send(**{"from": "anyone@else.test"})  # no default sender: nothing to derive a rule from
    assert [r.mail_from for r in mailbox.received] == [
        "team@example.com",
        "boss@corp.test",
        "ceo@bank.test",
        "anyone@else.test",
    ]


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("SPOOL_SMTP_STARTTLS", "ture"),
        ("SPOOL_SMTP_PORT", "smtp"),
        ("SPOOL_SMTP_PORT", "70000"),
        ("SPOOL_SMTP_FROM", "not an address"),
        ("SPOOL_SMTP_TIMEOUT", "-1"),
    ],
)
def test_misconfiguration_is_a_permanent_error(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(PermanentError, match="misconfigured"):
        send()


@pytest.mark.parametrize(
    "fields",
    [
        {"to": [], "subject": "s", "text": "t"},
        {"to": "not-an-address", "subject": "s", "text": "t"},
        {"to": "a@example.org, b@example.org", "subject": "s", "text": "t"},
        {"to": "a@example.org\r\nBcc: x@evil.test", "subject": "s", "text": "t"},
        {"to": "a@-bad-.org", "subject": "s", "text": "t"},
        {"to": "a..b@example.org", "subject": "s", "text": "t"},
        {"to": "a@example.org", "subject": "s"},
        {"to": "a@example.org", "subject": "", "text": "t"},
        {"to": "a@example.org", "subject": "s\r\nBcc: x@evil.test", "text": "t"},
        {"to": "a@example.org", "subject": "s", "text": "t", "headers": {"Bcc": "x@evil.test"}},
        {"to": "a@example.org", "subject": "s", "text": "t", "headers": {"From": "x@evil.test"}},
        {"to": "a@example.org", "subject": "s", "text": "t", "headers": {"Message-ID": "<x@y>"}},
        {"to": "a@example.org", "subject": "s", "text": "t", "headers": {"X-Spool-Job-Id": "j"}},
        {"to": "a@example.org", "subject": "s", "text": "t", "headers": {"X-A": "1\r\nB: 2"}},
        {"to": "a@example.org", "subject": "s", "text": "t", "smtp_host": "evil.test"},
        {"to": "a@example.org", "subject": "s", "text": "t", "password": "x"},
        {
            "to": [f"u{i}@example.org" for i in range(60)],
            "bcc": [f"b{i}@example.org" for i in range(60)],
            "subject": "s",
            "text": "t",
        },
    ],
)
def test_bad_payloads_are_refused_at_enqueue_time(fields: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        mail.EmailPayload.model_validate(fields)


def test_addresses_are_normalized() -> None:
    payload = mail.EmailPayload.model_validate(
        {"to": ["Zo\u00eb <ZOE@Example.ORG>", "x@b\u00fccher.example"], "subject": "s", "html": "h"}
    )
    assert payload.to == ["Zo\u00eb <ZOE@example.org>", "x@xn--bcher-kva.example"]

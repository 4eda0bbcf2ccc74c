"""send_email header injection (CVE-2024-6923 class), against a real aiosmtpd server.

On Python 3.11.7 a subject of `=?utf-8?q?Invoice=0D=0AReply-To:_x@evil.example?=`
put a separate Reply-To header on the wire. Every header-like field is tried here
with encoded words (q and b, several charsets) and raw control characters: each is
refused at enqueue (422), and a payload that skipped enqueue is refused at run time
(dead) with nothing reaching the server.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any

import pytest

from chalicelib.builtin import email as mail
from chalicelib.builtin import email_headers
from chalicelib.clock import FakeClock
from chalicelib.errors import PermanentError, ValidationFailed
from chalicelib.handlers import registry
from chalicelib.ids import new_job_id
from chalicelib.models import JobState, NewJob
from chalicelib.service import EnqueueRequest, Service
from chalicelib.storage.memory import MemoryStore
from chalicelib.worker import Worker, WorkerConfig
from tests.test_email import LoopbackController, Mailbox, ctx_for, point_at, smtp_server

INJECTED = "\r\nReply-To: x@evil.example"
GOOD = {"to": ["alice@example.org"], "subject": "Invoice", "text": "body"}


def _q(text: str, charset: str = "utf-8") -> str:
    data = text.encode(charset)
    return f"=?{charset}?q?" + "".join(f"={b:02X}" for b in data) + "?="


def _b(text: str, charset: str = "utf-8") -> str:
    return f"=?{charset}?b?" + base64.b64encode(text.encode(charset)).decode() + "?="


# Values that hold, or decode to, a control character.
BAD_VALUES = [
    "=?utf-8?q?Invoice=0D=0AReply-To:_x@evil.example?=",  # the issue's example
    "=?UTF-8?Q?Invoice=0d=0aReply-To:_x@evil.example?=",
    "=?utf-8?q?Invoice =0D=0AReply-To:_x@evil.example?=",  # a space inside the word
    "Re:=?utf-8?q?Invoice=0D=0AReply-To:_x@evil.example?=",  # no space before it
    "Hello " + _q("Invoice" + INJECTED),
    "Hello " + _b("Invoice" + INJECTED),
    "Hello " + _b("Invoice" + INJECTED).rstrip("=?") + "?=",  # unpadded base64
    _q("Invoice" + INJECTED, "iso-8859-1"),
    _b("Invoice" + INJECTED, "utf-16-be"),
    _q("Invoice" + INJECTED, "utf-7"),
    "=?x-unknown?q?Invoice=0D=0AReply-To:_x@evil.example?=",  # unknown charset: bytes
    "=?utf-8*en?q?Invoice=0D=0AReply-To:_x@evil.example?=",  # RFC 2231 language
    "=?unicode_escape?q?Invoice\\r\\nReply-To:_x@evil.example?=",
    _q(_q("Invoice" + INJECTED)),  # nested: decodes to an encoded word
    _q("Invoice\x00"),
    _q("Invoice\x1b[2J"),
    _q("Invoice\x7f"),
    _q("Invoice\x85Reply-To: x@evil.example"),  # NEL (C1)
    _q("Invoice\u2028Reply-To: x@evil.example"),
    _q("Invoice\u2029Reply-To: x@evil.example"),
    _q("Invoice\x0bReply-To: x@evil.example"),
    "Invoice\r\nReply-To: x@evil.example",
    "Invoice\nReply-To: x@evil.example",
    "Invoice\rReply-To: x@evil.example",
    "Invoice\x00",
    "Invoice\tTab",
    "Invoice\x0c",
    "Invoice\x1c",
    "Invoice\x85Reply-To: x@evil.example",
    "Invoice\u2028Reply-To: x@evil.example",
    "Invoice\u2029Reply-To: x@evil.example",
]


def _fields_for(field: str, value: str) -> dict[str, Any]:
    """A payload carrying the value in one header-like field."""
    if field == "subject":
        return {**GOOD, "subject": value}
    if field.startswith("header:"):
        return {**GOOD, "headers": {field.partition(":")[2]: value}}
    # address fields: the value as the display name, quoted and bare
    quoted = '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    mailbox = f"{quoted} <bob@example.org>" if field.endswith("-quoted") else f"{value} <b@e.org>"
    name = field.removesuffix("-quoted")
    payload = {**GOOD, name: [mailbox]}
    if name == "from":
        payload["from"] = mailbox
    return payload


FIELDS = [
    "subject",
    "to",
    "to-quoted",
    "cc-quoted",
    "bcc-quoted",
    "reply_to-quoted",
    "from-quoted",
    "header:X-Campaign",
    "header:In-Reply-To",
    "header:References",
    "header:List-Unsubscribe",
    "header:Keywords",
    "header:Comments",
]


@pytest.mark.parametrize("field", FIELDS)
@pytest.mark.parametrize("value", BAD_VALUES, ids=range(len(BAD_VALUES)))
def test_control_characters_in_any_header_field_are_refused_at_enqueue(
    field: str, value: str
) -> None:
    store = MemoryStore(FakeClock())
    request = EnqueueRequest(type="send_email", payload=_fields_for(field, value))
    with pytest.raises(ValidationFailed) as refused:
        Service(store, registry).enqueue([request], tenant="t1")
    assert refused.value.status == 422
    assert not any(store.counts().values())


@pytest.mark.parametrize("value", BAD_VALUES, ids=range(len(BAD_VALUES)))
def test_the_check_names_the_character(value: str) -> None:
    with pytest.raises(email_headers.UnsafeHeader, match=r"control character \(U\+"):
        email_headers.check_value(value, "the subject")


# -- run time: what reaches the server ----------------------------------------------
@pytest.fixture
def server(mailbox: Mailbox, monkeypatch: pytest.MonkeyPatch) -> Iterator[LoopbackController]:
    with smtp_server(mailbox) as controller:
        point_at(monkeypatch, controller.port)
        yield controller


@pytest.fixture
def mailbox() -> Mailbox:
    return Mailbox()


def _header_names(content: bytes) -> list[str]:
    head = content.split(b"\r\n\r\n", 1)[0]
    return [
        line.split(b":", 1)[0].decode().lower()
        for line in head.split(b"\r\n")
        if line and line[:1] not in (b" ", b"\t")
    ]


@pytest.mark.parametrize(
    "fields",
    [
        {"subject": "=?utf-8?q?Invoice=0D=0AReply-To:_x@evil.example?="},
        {"subject": _b("Invoice\r\nBcc: x@evil.example")},
        {"headers": {"X-Campaign": _q("spring\r\nReply-To: x@evil.example")}},
        {"headers": {"References": "<a@b> " + _q("x\r\nBcc: x@evil.example")}},
        {"reply_to": ['"' + _q("A\r\nBcc: x@evil.example") + '" <a@example.org>']},
    ],
)
def test_a_stored_payload_that_skipped_enqueue_never_reaches_the_wire(
    server: LoopbackController, mailbox: Mailbox, fields: dict[str, Any]
) -> None:
    """model_construct skips the validators, as a job stored before this fix did:
    the rendered bytes are checked before anything is sent."""
    data = {**GOOD, **fields}
    payload = mail.EmailPayload.model_construct(
        to=data["to"],
        cc=[],
        bcc=[],
        sender=None,
        reply_to=data.get("reply_to", []),
        subject=data["subject"],
        text=data["text"],
        html=None,
        headers=data.get("headers", {}),
    )
    with pytest.raises(PermanentError):
        mail.send_email(payload, ctx_for())
    assert mailbox.received == []


def test_through_the_worker_a_stored_injection_goes_dead_and_sends_nothing(
    server: LoopbackController, mailbox: Mailbox, clock: FakeClock
) -> None:
    store = MemoryStore(clock)
    bad = {**GOOD, "subject": "=?utf-8?q?Invoice=0D=0AReply-To:_x@evil.example?="}
    job = NewJob(id=new_job_id(), type="send_email", payload=bad, run_at=clock.now())
    store.add([job])  # as if enqueued before the fix
    Worker(store, registry, WorkerConfig(concurrency=1)).drain()
    dead = store.get(job.id)
    assert dead is not None and dead.state is JobState.DEAD
    assert dead.attempts == 1
    assert "control character" in (dead.last_error or "")
    assert mailbox.received == []


def test_the_issue_example_is_refused_with_a_clear_message() -> None:
    request = EnqueueRequest(
        type="send_email",
        payload={**GOOD, "subject": "=?utf-8?q?Invoice=0D=0AReply-To:_x@evil.example?="},
    )
    with pytest.raises(ValidationFailed) as refused:
        Service(MemoryStore(FakeClock()), registry).enqueue([request], tenant="t1")
    [error] = refused.value.details["errors"]
    assert error["loc"] == ["subject"]
    assert "control character (U+000D)" in error["msg"]


def test_legitimate_encoded_and_international_values_arrive_intact(
    server: LoopbackController, mailbox: Mailbox
) -> None:
    japanese = "\u8acb\u6c42\u66f8"  # ISO-2022-JP bytes hold ESC, the text does not
    iso2022 = base64.b64encode(japanese.encode("iso-2022-jp")).decode()
    payload = mail.EmailPayload.model_validate(
        {
            **GOOD,
            "to": ["Zo\u00eb Example <zoe@example.org>"],
            "reply_to": ["=?utf-8?q?Caf=C3=A9?= <cafe@example.org>"],
            "subject": f"=?iso-2022-jp?b?{iso2022}?= \u2713 " + "long " * 40,
            "headers": {"X-Campaign": "=?utf-8?q?caf=C3=A9?=", "References": "<a@b> <c@d>"},
        }
    )
    mail.send_email(payload, ctx_for())
    [got] = mailbox.received
    assert _header_names(got.content) == [
        "from",
        "to",
        "reply-to",
        "subject",
        "date",
        "message-id",
        "x-spool-job-id",
        "x-campaign",
        "references",
        "content-type",
        "content-transfer-encoding",
        "mime-version",
    ]
    message = got.message
    assert message["Subject"] == f"{japanese} \u2713 " + "long " * 40
    assert message["To"] == "Zo\u00eb Example <zoe@example.org>"
    assert message["Reply-To"] == "Caf\u00e9 <cafe@example.org>"
    assert message["X-Campaign"] == "caf\u00e9"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("SPOOL_SMTP_FROM", "=?utf-8?q?Spool=0D=0ABcc:_x@evil.example?= <noreply@example.com>"),
        ("SPOOL_SMTP_MESSAGE_ID_DOMAIN", "example.com>\r\nBcc: x@evil.example"),
        ("SPOOL_SMTP_LOCAL_HOSTNAME", "worker.test\r\nRSET"),
    ],
)
def test_settings_that_reach_headers_are_checked_too(
    server: LoopbackController,
    mailbox: Mailbox,
    monkeypatch: pytest.MonkeyPatch,
    name: str,
    value: str,
) -> None:
    monkeypatch.setenv(name, value)
    payload = mail.EmailPayload.model_validate(GOOD)
    with pytest.raises(PermanentError, match="misconfigured"):
        mail.send_email(payload, ctx_for())
    assert mailbox.received == []

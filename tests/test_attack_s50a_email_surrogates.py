"""send_email and header-like fields holding a lone surrogate.

A JSON escape such as "\\ud800" arrives as a lone surrogate, which no encoding
can write. The subject and bodies were refused at enqueue (the model's length
check reads them as text), but an address's display name and a custom header's
value were stored (201): the job then went dead on its first attempt ("cannot
build the message"), or (a surrogate-escaped byte, U+DC80 to U+DCFF) was sent as
an "unknown-8bit" encoded word of a byte the client never wrote. They are now
refused at enqueue (422) like any other character that cannot stand in a header
line, as typed or once an encoded word is decoded.
"""

from __future__ import annotations

from typing import Any

import pytest

from chalicelib.builtin import email as _registers_send_email  # noqa: F401
from chalicelib.builtin import email_headers
from chalicelib.clock import FakeClock
from chalicelib.errors import ValidationFailed
from chalicelib.handlers import registry
from chalicelib.service import EnqueueRequest, Service
from chalicelib.storage.memory import MemoryStore

GOOD: dict[str, Any] = {"to": ["alice@example.org"], "subject": "Invoice", "text": "body"}
NAME = "Bob \ud800"
PAYLOADS = {
    "to": {**GOOD, "to": [f"{NAME} <bob@example.org>"]},
    "to-quoted": {**GOOD, "to": [f'"{NAME}" <bob@example.org>']},
    "cc": {**GOOD, "cc": [f"{NAME} <bob@example.org>"]},
    "bcc": {**GOOD, "bcc": [f"{NAME} <bob@example.org>"]},
    "reply_to": {**GOOD, "reply_to": [f"{NAME} <bob@example.org>"]},
    "from": {**GOOD, "from": f"{NAME} <noreply@example.com>"},
    "header": {**GOOD, "headers": {"X-Campaign": "may\udcff"}},
    "encoded": {**GOOD, "headers": {"X-Campaign": "=?unicode_escape?q?\\ud800?="}},
}


@pytest.mark.parametrize("name", list(PAYLOADS))
def test_a_lone_surrogate_in_a_header_field_is_refused_at_enqueue(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SPOOL_SMTP_FROM", "Spool <noreply@example.com>")
    store = MemoryStore(FakeClock())
    request = EnqueueRequest(type="send_email", payload=PAYLOADS[name])
    with pytest.raises(ValidationFailed) as refused:
        Service(store, registry).enqueue([request], tenant="t1")
    assert refused.value.status == 422
    assert "surrogate" in str(refused.value.details)
    assert not any(store.counts().values())


def test_the_check_names_the_surrogate() -> None:
    with pytest.raises(email_headers.UnsafeHeader, match=r"lone surrogate \(U\+D800\)"):
        email_headers.check_value("Hi \ud800", "the subject")


def test_characters_outside_the_bmp_still_pass() -> None:
    """A surrogate pair's character (an emoji) is one code point in a str: not refused."""
    assert email_headers.check_value("Hi \U0001f600", "the subject") == "Hi \U0001f600"

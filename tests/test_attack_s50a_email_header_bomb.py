"""send_email's header check against encoded words built to multiply.

check_value decodes every encoded word it finds, overlapping ones included, and
decodes the results again up to MAX_NESTING times. A subject of k overlapping
words (`=?a?q?x` repeated) ending in q-escaped terminators for each level made
every level find every suffix of the one before: about k**5/120 texts, each kept
in a list. 592 characters took 16 s and ~300 MB, one more dozen words minutes and
gigabytes, at enqueue, inside the API. The check now stops at a fixed number of
decoded words and refuses the value (422), which decodes nothing dangerous only
by luck of the attacker's choosing.
"""

from __future__ import annotations

import pytest

from chalicelib.builtin import email as _registers_send_email  # noqa: F401
from chalicelib.builtin import email_headers
from chalicelib.clock import FakeClock
from chalicelib.errors import ValidationFailed
from chalicelib.handlers import registry
from chalicelib.service import EnqueueRequest, Service
from chalicelib.storage.memory import MemoryStore


def _escaped(text: str) -> str:
    """Every character q-escaped: one decoding level gives `text` back."""
    return "".join(f"={ord(c):02X}" for c in text)


def nested_overlapping_words(words: int, levels: int) -> str:
    """`words` overlapping encoded words whose decodings hold encoded words again,
    `levels` deep: each level's terminator is the next one q-escaped once more."""
    terminators = []
    terminator = "?="
    for _ in range(levels):
        terminators.append(terminator)
        terminator = _escaped(terminator)
    return "=?a?q?x" * words + "".join(reversed(terminators))


BOMB = nested_overlapping_words(60, email_headers.MAX_NESTING)


@pytest.mark.timeout(10)
def test_multiplying_encoded_words_are_refused_quickly() -> None:
    assert len(BOMB) <= 998  # fits the subject's limit
    with pytest.raises(email_headers.UnsafeHeader, match="encoded words"):
        email_headers.check_value(BOMB, "the subject")


@pytest.mark.timeout(10)
def test_the_bomb_is_a_422_at_enqueue() -> None:
    store = MemoryStore(FakeClock())
    payload = {"to": ["alice@example.org"], "subject": BOMB, "text": "body"}
    with pytest.raises(ValidationFailed) as refused:
        Service(store, registry).enqueue(
            [EnqueueRequest(type="send_email", payload=payload)], tenant="t1"
        )
    assert refused.value.status == 422
    assert "encoded words" in str(refused.value.details)
    assert not any(store.counts().values())


@pytest.mark.timeout(10)
def test_a_header_field_of_overlapping_words_is_refused_too() -> None:
    """Any field checked, not only the subject: a custom header of the same shape."""
    store = MemoryStore(FakeClock())
    payload = {
        "to": ["alice@example.org"],
        "subject": "Hi",
        "text": "body",
        "headers": {"X-Campaign": BOMB},
    }
    with pytest.raises(ValidationFailed) as refused:
        Service(store, registry).enqueue(
            [EnqueueRequest(type="send_email", payload=payload)], tenant="t1"
        )
    assert "encoded words" in str(refused.value.details)


def test_an_ordinary_long_encoded_subject_still_passes() -> None:
    """A client that encodes a long non-ASCII subject word by word: 20 words."""
    word = "=?utf-8?q?=C3=A9t=C3=A9?="
    subject = " ".join([word] * 20)
    assert email_headers.check_value(subject, "the subject") == subject


def test_a_nested_control_character_is_still_found() -> None:
    inner = "=?utf-8?q?" + _escaped("Invoice\r\nBcc: x@evil.example") + "?="
    with pytest.raises(email_headers.UnsafeHeader, match="control character"):
        email_headers.check_value("=?utf-8?q?" + _escaped(inner) + "?=", "the subject")

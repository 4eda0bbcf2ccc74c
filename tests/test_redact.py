"""Credentials never survive redaction, and URLs without any come back unchanged."""

from __future__ import annotations

import re

import pytest

from chalicelib.models import MAX_ERROR_CHARS, error_text
from chalicelib.redact import redact_text, redact_url


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("postgresql://spool:s3cret@db:5432/spool", "postgresql://spool:***@db:5432/spool"),
        (
            "postgresql://db/spool?password=s3cret&sslmode=require",
            "postgresql://db/spool?password=***&sslmode=require",
        ),
        ("postgresql://spool@db/spool", "postgresql://spool@db/spool"),
        ("sqlite:///.spool/spool.db", "sqlite:///.spool/spool.db"),
        ("dynamodb://t?queue=q&bucket=b", "dynamodb://t?queue=q&bucket=b"),
        ("https://u:p@example.com/x?token=abc", "https://u:***@example.com/x?token=***"),
    ],
)
def test_redact_url(url: str, expected: str) -> None:
    assert redact_url(url) == expected


def test_redact_text_masks_userinfo_and_password_pairs() -> None:
    text = "connection to postgresql://u:p%40ss@h:1/db failed; dsn: host=h password='x y' user=u"
    out = redact_text(text)
    assert "p%40ss" not in out and "x y" not in out
    assert "postgresql://u:***@h:1/db" in out and "user=u" in out


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("DB_PASSWORD=hunter2 next=1", "DB_PASSWORD=*** next=1"),
        ("API_TOKEN = 'a b'", "API_TOKEN = ***"),
        ("client-secret=zz", "client-secret=***"),
        ("tokens=5", "tokens=5"),
    ],
)
def test_prefixed_secret_names_are_masked(text: str, expected: str) -> None:
    assert redact_text(text) == expected


@pytest.mark.timeout(60)  # quadratic patterns took minutes on these (276 s for the first)
@pytest.mark.parametrize("unit", ["a-", "a", "a:", "a@", "x://", "password=", "bearer "])
def test_redacting_a_megabyte_of_hostile_text_stays_linear(unit: str) -> None:
    from chalicelib.log_redact import redactor

    text = unit * (1_000_000 // len(unit))
    assert len(redact_text(text)) > 0
    assert len(redactor.text(text)) > 0


# -- error_text: a failure's message as a job keeps it -------------------------------


def test_error_text_keeps_a_short_message_whole_and_masked() -> None:
    assert error_text("bad password=hunter2", "ValueError: ") == "ValueError: bad password=***"


@pytest.mark.parametrize(
    "message",
    [
        "P" * MAX_ERROR_CHARS,  # exactly at the limit, but the prefix pushes it over
        "P" * (MAX_ERROR_CHARS + 1),
        "P" * (3 * MAX_ERROR_CHARS),
        # every mask is longer than the value it hides: masking grows the text by half
        "pwd=a " * (MAX_ERROR_CHARS // 6),
        "pwd=a " * (MAX_ERROR_CHARS // 3),
    ],
)
def test_error_text_never_passes_the_limit_and_keeps_its_marker(message: str) -> None:
    text = error_text(message, "worker error: PermanentError: ")
    assert len(text) <= MAX_ERROR_CHARS
    assert re.search(r"\[\.\.\. [1-9]\d* characters trimmed\]$", text), text[-80:]
    assert text.startswith("worker error: PermanentError: ")
    assert "pwd=a" not in text


def test_error_text_at_the_limit_without_prefix_is_untouched() -> None:
    message = "P" * MAX_ERROR_CHARS
    assert error_text(message) == message

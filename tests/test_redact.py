"""Credentials never survive redaction, and URLs without any come back unchanged."""

from __future__ import annotations

import pytest

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

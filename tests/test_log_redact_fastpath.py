"""The redactor's fast path (no shape word in the text: only configured secrets are
masked) must give exactly what the full set of passes gives, for any text."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chalicelib import log_redact
from chalicelib.log_redact import SENSITIVE_NAMES, SHAPE_WORDS, Redactor

# Pieces that make the shapes likely: names, separators, schemes, quotes.
_PIECES = st.sampled_from(
    [
        *sorted(SENSITIVE_NAMES),
        *(n.upper() for n in SENSITIVE_NAMES),
        "X_API_KEY", "Api_Key", "PaSsWoRd", "passwd", "pwd", "secret", "token", "Bearer ",
        "basic ", "=", ": ", ":", '"', "'", "\\\"", "://", "@", "user:pw@", "https://",
        " ", "\n", "abc", "s3cr3t-key-value", "\u017fecret", "to\u212aen", "k",
    ]
)  # fmt: skip
_TEXTS = st.lists(st.one_of(_PIECES, st.text(max_size=6)), max_size=12).map("".join)


def full_passes(redactor: Redactor, text: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """The reference: every pass runs (an empty shape word is in every text), and the
    answer is worked out again, not the one remembered from the fast path."""
    with monkeypatch.context() as patch:
        patch.setattr(log_redact, "SHAPE_WORDS", ("",))
        patch.setattr(log_redact, "REMEMBER_UP_TO", -1)
        return redactor.text(text)


@settings(max_examples=400, deadline=None)
@given(text=_TEXTS)
def test_fast_path_equals_the_full_passes(text: str) -> None:
    redactor = Redactor()
    redactor.add({"s3cr3t-key-value"})
    with pytest.MonkeyPatch.context() as monkeypatch:
        assert redactor.text(text) == full_passes(redactor, text, monkeypatch)


@pytest.mark.parametrize("name", sorted(SENSITIVE_NAMES))
@pytest.mark.parametrize("spell", [str.lower, str.upper, lambda n: n.replace("-", "_")])
def test_every_sensitive_name_wakes_the_full_passes(name: str, spell) -> None:
    text = spell(name).casefold()
    assert any(word in text for word in SHAPE_WORDS), name


def test_a_plain_job_line_is_untouched_and_a_configured_secret_still_masked() -> None:
    redactor = Redactor()
    redactor.add({"k3y-of-tenant-a"})
    line = "2026-12-01T09:00:00.000Z INFO spool.jobs: job enqueued job_id=ab12 tenant=a"
    assert redactor.text(line) == line
    assert redactor.text(f"{line} leaked=k3y-of-tenant-a") == f"{line} leaked=***"


def test_a_remembered_text_is_masked_again_once_a_secret_is_added() -> None:
    redactor = Redactor()
    assert redactor.text("tenant-s3cr3t-v4lue") == "tenant-s3cr3t-v4lue"  # remembered
    redactor.add({"s3cr3t-v4lue"})
    assert redactor.text("tenant-s3cr3t-v4lue") == "tenant-***"
    redactor.clear()
    assert redactor.text("tenant-s3cr3t-v4lue") == "tenant-s3cr3t-v4lue"


def test_remembered_texts_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(log_redact, "REMEMBERED", 8)
    redactor = Redactor()
    for i in range(50):
        assert redactor.text(f"job-{i}") == f"job-{i}"
    assert len(redactor._known) <= 8
    long_text = "x" * (log_redact.REMEMBER_UP_TO + 1)
    assert redactor.text(long_text) == long_text
    assert long_text not in redactor._known

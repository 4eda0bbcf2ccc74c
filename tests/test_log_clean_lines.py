"""logs.text_line skips the whole line's second mask when no part of it can be masked
(stop 41): every `key=value` piece, the head and the time stamp have each been found
clean on their own, and no configured secret holds a space, so no secret or shape can
span two of the parts the line joins with spaces. What it writes stays the line
logging's own record, filter and formatter write, byte for byte."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chalicelib import log_redact, logs
from chalicelib.log_redact import redactor
from tests.test_log_fastline import NOW, _through_logging
from tests.test_log_fastline import stream as stream  # the fixture

CLEAN = {
    "event": "http_request",
    "method": "POST",
    "route": "/enqueue",
    "status": 201,
    "duration_ms": 1.234,
    "tenant": "acme",
}


@pytest.fixture(autouse=True)
def fixed_clock(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    clock = SimpleNamespace(time=lambda: NOW, strftime=time.strftime, gmtime=time.gmtime)
    monkeypatch.setattr(logs, "time", clock)
    # Before too: secrets an earlier test in this process left (one holding a space
    # sends every line through the whole mask) would decide these tests' outcome.
    redactor.clear()
    yield
    redactor.clear()


def _same_both_ways(message: str, extra: dict[str, Any], level: int = logging.INFO) -> str:
    for _ in range(2):  # the second line reads the kept pieces and their verdicts
        fast = logs.text_line("spool.http", level, message, extra)
        assert fast == _through_logging("spool.http", level, message, dict(extra))
    return fast


def test_a_clean_line_is_not_masked_again_as_a_whole(
    stream: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    logs.text_line("spool.http", logging.INFO, "POST /enqueue 201", CLEAN)  # keeps its pieces
    whole: list[str] = []
    real = redactor._masked

    def counted(text: str) -> str:
        whole.append(text)
        return real(text)

    monkeypatch.setattr(redactor, "_masked", counted)
    line = logs.text_line("spool.http", logging.INFO, "POST /enqueue 201", CLEAN)
    assert line not in whole
    assert line == _through_logging("spool.http", logging.INFO, "POST /enqueue 201", CLEAN)


# Secrets and shapes that only the whole line's mask finds: each spans two parts, or
# sits in a part no piece masks (a key, the level, the logger's name, the stamp).
SPANNING = [
    ({"tenant=acme"}, CLEAN),  # a key and its value
    ({"INFO"}, CLEAN),  # the level
    ({"spool.http"}, CLEAN),  # the logger's name
    ({"2025-11-24T16"}, CLEAN),  # the time stamp (NOW)
    ({"route=/enqueue status"}, CLEAN),  # a secret holding a space spans two pieces
    ({"acme tenant2"}, {**CLEAN, "tenant2": "x"}),
    (set(), {**CLEAN, "password": "hunter22"}),  # a shape made by a key
    (set(), {**CLEAN, "api_key": "plain"}),
    (set(), {**CLEAN, "tenant": "bearer"}),  # a shape word in a value: the full passes
    (set(), {**CLEAN, "note": "Authorization: x"}),
    (set(), {**CLEAN, "tenant": "to\u212aen"}),  # the Kelvin sign casefolds to k
    (set(), {**CLEAN, "attempt": 3, "delay_s": 0.5, "ok": True}),
]


@pytest.mark.parametrize(("secrets", "extra"), SPANNING)
def test_a_line_only_its_whole_mask_changes_is_masked_as_before(
    stream: Any, secrets: set[str], extra: dict[str, Any]
) -> None:
    redactor.add(secrets)
    line = _same_both_ways("POST /enqueue 201", extra)
    for secret in secrets:
        assert secret not in line


def test_a_shape_word_in_the_message_masks_the_line_as_before(stream: Any) -> None:
    _same_both_ways("POST /enqueue 201 password=hunter22", CLEAN)
    _same_both_ways("token refreshed", CLEAN)


def test_a_secret_added_after_a_piece_was_found_clean_is_masked(stream: Any) -> None:
    fields = {**CLEAN, "tenant": "tenant-key-0123456789"}
    assert "tenant=tenant-key-0123456789" in _same_both_ways("m", fields)
    redactor.add({"key-0123456789 event"})  # spans the tenant piece and nothing else...
    redactor.add({"tenant=tenant-key"})  # ... and this one a kept, clean piece
    line = _same_both_ways("m", fields)
    assert "tenant=tenant-key" not in line


def test_the_request_id_part_is_checked_too(stream: Any) -> None:
    logs.set_request_id("req-sk-9876543210")
    try:
        redactor.add({"sk-9876543210"})
        line = _same_both_ways("m", CLEAN)
    finally:
        logs.set_request_id(None)
    assert "sk-9876543210" not in line


def test_secrets_with_a_space_are_known_to_the_redactor() -> None:
    fresh = log_redact.Redactor()
    assert not fresh.spans_spaces()
    fresh.add({"no-space-here"})
    assert not fresh.spans_spaces()
    fresh.add({"has a space"})
    assert fresh.spans_spaces()
    fresh.clear()
    assert not fresh.spans_spaces()


_SECRETS = st.sampled_from(
    [
        "acme",
        "tenant=acme",
        "INFO",
        "POST /enqueue",
        "sk-live-0123",
        "=201",
        "1.5 ok",
        "T16:02",
        "ms=1.5",
        "03.456Z",
        "=inf",
    ]
)
_VALUES = st.one_of(
    st.sampled_from(["acme", "token", "Bearer x", "a b", "password=p", "/enqueue", "sk-live-0123"]),
    st.text(max_size=8),
    st.integers(-5, 300),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([True, False, 1.5, 0.25, None, {"password": "x"}, ["a", "sk-live-0123"]]),
)
_KEYS = st.sampled_from(
    ["event", "tenant", "status", "api_key", "note", "route", "attempt", "token_ms", "duration_ms"]
)


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    secrets=st.sets(_SECRETS, max_size=3),
    extra=st.dictionaries(_KEYS, _VALUES, max_size=5),
    message=st.sampled_from(["POST /enqueue 201", "job enqueued", "token refreshed"]),
)
def test_any_line_is_the_line_logging_writes(
    stream: Any, secrets: set[str], extra: dict[str, Any], message: str
) -> None:
    redactor.clear()
    redactor.add(secrets)
    _same_both_ways(message, extra)


@pytest.mark.parametrize("millis", [0, 7, 45, 999, 1000])
def test_the_stamp_is_written_as_before(millis: int) -> None:
    assert logs._utc_stamp(1_764_000_123, millis) == f"2025-11-24T16:02:03.{millis:03d}Z"


def test_a_secret_added_while_a_line_is_made_is_masked_in_it(
    stream: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another thread adds a secret after this line's pieces were judged clean."""
    logs.text_line("spool.http", logging.INFO, "POST /enqueue 201", CLEAN)  # keeps its pieces
    real = redactor.spans_spaces

    def meanwhile() -> bool:
        redactor.add({"tenant=acme"})
        return real()

    monkeypatch.setattr(redactor, "spans_spaces", meanwhile)
    line = logs.text_line("spool.http", logging.INFO, "POST /enqueue 201", CLEAN)
    assert "tenant=acme" not in line

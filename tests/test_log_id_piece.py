"""logs._id_piece: a new job id's `key=value` piece, made with one search for secrets
(stop 44), is the piece and verdict the general way (mask, quote, look again) makes."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chalicelib import logs
from chalicelib.ids import new_job_id
from chalicelib.log_redact import SHAPE_WORDS, redactor


@pytest.fixture(autouse=True)
def fresh() -> Iterator[None]:
    redactor.clear()
    yield
    redactor.clear()


def general(key: str, value: str) -> tuple[str, bool]:
    """The piece as _piece makes any text's, and its verdict as _keep gives it."""
    piece = f"{key}={logs._text_value(redactor.text(value))}"
    return piece, redactor.leaves(piece)


def test_what_the_short_cut_rests_on() -> None:
    for word in SHAPE_WORDS:
        assert not logs._ID_CHARS.issuperset(word), word  # no word made of id characters
        assert "=" not in word  # none spans the `=` between key and value
    assert not logs._ID_CHARS & set(' "=\\:\t\n')  # nothing quoted, no separator
    assert logs._ID_CHARS.issuperset(new_job_id())


ids = st.text("0123456789abcdefj_", min_size=1, max_size=40)
keys = st.sampled_from(["job_id", "token_id", "tenant", "x", "pwd", "lease", "Authorization"])
# Secrets an id could hold, ones spanning the key and the value, and unrelated ones.
secrets = st.lists(
    st.sampled_from(["0123", "abcdef01", "d=j_0", "job_id=j", "n_id=", "s3cr3t-v", "j_0f"])
    | st.text("0123456789abcdefj_=", min_size=4, max_size=8),
    max_size=3,
)


@settings(max_examples=500, deadline=None)
@given(key=keys, value=ids, configured=secrets)
def test_the_piece_and_its_verdict_are_the_general_ones(
    key: str, value: str, configured: list[str]
) -> None:
    redactor.clear()
    redactor.add(configured)
    _, pieces = logs._kept_pieces()
    assert logs._piece(pieces, key, value) == general(key, value)
    assert logs._piece(pieces, key, value) == general(key, value)  # and as kept


def test_a_new_id_is_not_masked_through_the_general_way(monkeypatch: pytest.MonkeyPatch) -> None:
    redactor.add({"k-0123456789abcdef"})
    masked: list[Any] = []
    real = redactor.text

    def counted(v: Any) -> Any:
        masked.append(v)
        return real(v)

    monkeypatch.setattr(redactor, "text", counted)
    job_id = new_job_id()
    line = logs.text_line("spool.jobs", 20, "job enqueued", {"event": "enqueued", "job_id": job_id})
    assert f" job_id={job_id}" in line
    assert job_id not in masked


def test_an_id_holding_a_secret_is_masked() -> None:
    job_id = new_job_id()
    redactor.add({job_id[5:20]})
    line = logs.text_line("spool.jobs", 20, "job enqueued", {"event": "enqueued", "job_id": job_id})
    assert job_id[5:20] not in line and "***" in line

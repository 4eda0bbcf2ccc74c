"""log_redact._has_shape_word answers as the generator it replaced: a shape word in the text."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from chalicelib.log_redact import SHAPE_WORDS, _has_shape_word, has_shape_word


def _by_generator(folded: str) -> bool:
    return any(word in folded for word in SHAPE_WORDS)


pieces = st.sampled_from([*SHAPE_WORDS, "job_id=", "j_0190", "tenant", "pass", ":/", "", " "])


@settings(max_examples=500, deadline=None)
@given(text=st.text(max_size=30) | st.lists(pieces | st.text(max_size=3)).map("".join))
def test_the_same_answer_as_the_generator(text: str) -> None:
    assert _has_shape_word(text) == _by_generator(text)
    assert has_shape_word(text) == _by_generator(text.casefold())


def test_every_word_is_found_and_an_id_is_not() -> None:
    for word in SHAPE_WORDS:
        assert _has_shape_word(f"x{word}y")
    assert not _has_shape_word("job_id=j_0190000000000000000000000000000a")

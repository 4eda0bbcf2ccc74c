"""chalicelib/jsonstrict.py: what `make mutation` found untested.

Written to kill the mutants `make mutation MUTANTS='chalicelib.jsonstrict*'` left
alive (docs/testing.md): how a long out-of-range number is shown in the message,
where the error points, and a UTF-16 body (json.loads reads UTF-16 and UTF-32
bytes) whose refusal must stay a JSONDecodeError, not a UnicodeDecodeError.
"""

from __future__ import annotations

import json

import pytest

from chalicelib.jsonstrict import loads_strict


def overflowing(length: int) -> str:
    """A number literal of exactly `length` characters that overflows a float (1e999)."""
    return "1e" + "0" * (length - 5) + "999"


def refusal(text: str | bytes) -> json.JSONDecodeError:
    with pytest.raises(json.JSONDecodeError) as info:
        loads_strict(text)
    return info.value


@pytest.mark.parametrize("length", [5, 39, 40])
def test_an_out_of_range_number_up_to_40_characters_is_shown_whole(length: int) -> None:
    literal = overflowing(length)
    assert len(literal) == length and float(literal) == float("inf")
    assert refusal(f"[{literal}]").msg == (
        f"the number {literal} is out of range: JSON numbers are finite"
    )


@pytest.mark.parametrize("length", [41, 42, 400])
def test_a_longer_out_of_range_number_is_shown_cut_at_40(length: int) -> None:
    literal = overflowing(length)
    assert refusal(f"[{literal}]").msg == (
        f"the number {literal[:40]}... is out of range: JSON numbers are finite"
    )


@pytest.mark.parametrize(
    ("text", "pos"),
    [
        ("NaN", 0),
        ("1e999", 0),
        ("[1, NaN]", 4),
        ('{"a": Infinity, "b": Infinity}', 6),
        ("[NaN, NaN]", 1),
    ],
)
def test_the_error_points_at_the_first_occurrence(text: str, pos: int) -> None:
    error = refusal(text)
    assert error.pos == pos
    assert error.doc == text


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-be", "utf-32"])
def test_a_refused_number_in_a_utf16_or_utf32_body_is_still_a_json_error(encoding: str) -> None:
    assert loads_strict('{"a": [1.5]}'.encode(encoding)) == {"a": [1.5]}
    error = refusal('{"a": NaN}'.encode(encoding))
    assert error.msg == "NaN is not valid JSON: JSON numbers are finite"

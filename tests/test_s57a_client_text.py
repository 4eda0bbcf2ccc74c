"""chalicelib/client_text.py refuses exactly Unicode categories Cc and Cs (stop 57),
and since stop 61 Zl, Zp and Cf but U+200C and U+200D (the joiners, which scripts and
emoji need): tests/test_attack_s61E_key_invisible_text.py.

The rule the API, the client and the command line hold an idempotency key to, and
the pattern /openapi.json states for it, checked over every code point against
unicodedata: a character added to (or missing from) the rule's class fails here.
"""

from __future__ import annotations

import re
import sys
import unicodedata

import pytest

from chalicelib import client_text
from chalicelib.service import EnqueueRequest

REFUSED_CATEGORIES = ("Cc", "Cs", "Zl", "Zp", "Cf")
TEXT_ALL_THE_SAME = (0x200C, 0x200D)  # Cf, but text: zero-width non-joiner and joiner


def refused_by_category(point: int) -> bool:
    return point not in TEXT_ALL_THE_SAME and unicodedata.category(chr(point)) in REFUSED_CATEGORIES


def test_the_rule_refuses_exactly_the_control_separator_format_and_surrogate_points() -> None:
    wrong = [
        hex(point)
        for point in range(sys.maxunicode + 1)
        if (client_text.first_refused(chr(point)) is not None) != refused_by_category(point)
    ]
    assert wrong == []


def test_the_documents_pattern_takes_what_the_rule_takes() -> None:
    """Over every code point of the Basic Multilingual Plane but the surrogates (no
    JSON body holding one is read), in the middle of a key: the pattern is anchored,
    and a key is checked whole. Beyond the BMP the pattern names nothing (without
    ECMA-262's u flag it could not): it takes every such point, the rule a few."""
    pattern = re.compile(client_text.SCHEMA_PATTERN)
    wrong = [
        hex(point)
        for point in range(0x10000)
        if not 0xD800 <= point <= 0xDFFF
        and (pattern.fullmatch(f"a{chr(point)}b") is None)
        != (client_text.first_refused(chr(point)) is not None)
    ]
    assert wrong == []
    assert all(pattern.fullmatch(chr(p)) for p in range(0x10000, sys.maxunicode + 1))


def test_a_refusal_names_the_field_the_code_point_and_the_place() -> None:
    refused = client_text.refusal("order\u001b[31m7")
    assert refused == client_text.Refusal(
        "control_character", "a control character, U+001B, at index 5"
    )
    assert refused.message("idempotency_key") == (
        f"idempotency_key holds a control character, U+001B, at index 5: {client_text.REFUSED_TEXT}"
    )
    lone = client_text.refusal("k\udc80")
    said = "an unpaired surrogate, U+DC80, at index 1"
    assert lone == client_text.Refusal("lone_surrogate", said)
    assert client_text.refusal("caf\u00e9 \u00a0\U0001f600") is None


@pytest.mark.parametrize("key", ["\u0000", "a\nb", "\u007f", "x\u0085"])
def test_a_request_built_in_python_is_held_to_the_rule_too(key: str) -> None:
    """What the scheduler and `spool enqueue` build without a JSON body in between."""
    with pytest.raises(ValueError, match=r"the idempotency key holds a control character"):
        EnqueueRequest(type="echo", idempotency_key=key)


def test_the_document_states_the_rule() -> None:
    schema = EnqueueRequest.model_json_schema()["properties"]["idempotency_key"]
    [text] = [branch for branch in schema["anyOf"] if branch.get("type") == "string"]
    assert text == {
        "type": "string",
        "minLength": 1,
        "maxLength": 200,
        "pattern": client_text.SCHEMA_PATTERN,
    }
    assert client_text.REFUSED_TEXT in schema["description"]

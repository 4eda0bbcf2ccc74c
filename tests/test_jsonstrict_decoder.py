"""loads_strict through one shared decoder (stop 39) accepts, refuses and answers
exactly as json.loads with its hooks did: same value, same error class, message and
position, for str, bytes and bytearray in every encoding json.loads reads."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chalicelib import jsonstrict
from chalicelib.jsonstrict import Refused, StrictRefusal, loads_strict


def loads_before(text: Any) -> Any:
    """loads_strict as it was: json.loads given the hooks on every call."""
    try:
        return json.loads(
            text,
            parse_constant=jsonstrict._refuse_constant,
            parse_float=jsonstrict._finite_float,
            object_pairs_hook=jsonstrict._unique_keys,
        )
    except Refused as exc:
        doc = text.decode("utf-8", "replace") if isinstance(text, bytes) else text
        raise json.JSONDecodeError(str(exc), doc, max(0, doc.find(exc.token))) from None


def outcome(loads: Any, text: Any) -> tuple[str, Any]:
    try:
        value = loads(text)
    except json.JSONDecodeError as exc:
        # StrictRefusal is a JSONDecodeError that lets parse_json find the token (s56).
        kind = json.JSONDecodeError if isinstance(exc, StrictRefusal) else type(exc)
        return ("refused", (kind, exc.msg, exc.doc, exc.pos))
    except (TypeError, UnicodeDecodeError) as exc:
        return ("raised", (type(exc), str(exc)))
    return ("value", json.dumps(value, sort_keys=True))


DOCUMENTS = [
    '{"type": "echo", "payload": {"n": 1}}',
    '{"a": 1, "a": 2}',
    '{"a": {"b": 1, "b": 1}}',
    "[NaN]",
    "[-Infinity, 1]",
    "[1e999]",
    "[1e-400]",
    "[1.5, -0.0, 1e308]",
    "\ufeff{}",
    "",
    "   ",
    "{",
    '"\\ud800"',
    '["\ud800"]',  # a lone surrogate itself: bytes read with surrogatepass, as json.loads
    '{"é": "\\u00e9", "k": [true, false, null]}',
    "[1] x",
]


@pytest.mark.parametrize("doc", DOCUMENTS)
@pytest.mark.parametrize(
    "form",
    [
        lambda d: d,
        lambda d: d.encode("utf-8", "surrogatepass"),
        lambda d: bytearray(d.encode("utf-8", "surrogatepass")),
        lambda d: d.encode("utf-8-sig", "surrogatepass"),
        lambda d: d.encode("utf-16", "surrogatepass"),
        lambda d: d.encode("utf-16-le", "surrogatepass"),
        lambda d: d.encode("utf-32", "surrogatepass"),
    ],
)
def test_every_document_is_answered_as_before(doc: str, form: Any) -> None:
    text = form(doc)
    assert outcome(loads_strict, text) == outcome(loads_before, text)


@pytest.mark.parametrize("text", [None, 5, memoryview(b"{}"), ["{}"]])
def test_what_is_no_document_is_refused_as_before(text: Any) -> None:
    assert outcome(loads_strict, text) == outcome(loads_before, text)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.sampled_from(
            ['{"', '"a"', '"b"', ":", ",", "1", "1e999", "NaN", "[", "]", "{", "}", " "]
        ),
        max_size=14,
    ).map("".join)
)
def test_any_text_is_answered_as_before(text: str) -> None:
    assert outcome(loads_strict, text) == outcome(loads_before, text)
    assert outcome(loads_strict, text.encode()) == outcome(loads_before, text.encode())


def test_the_decoder_is_built_once_not_per_call(monkeypatch: pytest.MonkeyPatch) -> None:
    built: list[int] = []
    real_init = json.JSONDecoder.__init__

    def counting(self: json.JSONDecoder, *args: Any, **kwargs: Any) -> None:
        built.append(1)
        real_init(self, *args, **kwargs)

    monkeypatch.setattr(json.JSONDecoder, "__init__", counting)
    for _ in range(3):
        assert loads_strict(b'{"type": "echo"}') == {"type": "echo"}
    assert built == []

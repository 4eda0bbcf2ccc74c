"""http.dumps and SQLite's payload encoding call the C JSON encoder themselves
(chalicelib/json_encode.py, stop 42) and answer, and refuse, exactly as
JSONEncoder.encode did: the same text, the same exception and message, for any
JSON-like value, datetimes (http's default), NaN and infinities (refused by http,
written by the store), str subclasses, keys of every kind JSON takes, and values it
cannot take."""

from __future__ import annotations

import json
import math
import sys
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chalicelib.api import http
from chalicelib.storage import sqlite

BEFORE = json.JSONEncoder(separators=(",", ":"), default=http._default, allow_nan=False).encode
STORE_BEFORE = json.JSONEncoder(separators=(",", ":")).encode


def outcome(encode: Any, value: Any) -> tuple[str, Any]:
    try:
        return ("text", encode(value))
    except Exception as exc:
        return ("raised", (type(exc), str(exc)))


class Colour(StrEnum):
    RED = "red"


scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()  # NaN and infinities too: refused the same way
    | st.text()
    | st.datetimes(timezones=st.just(UTC))
    | st.sampled_from([Colour.RED, b"bytes", {1, 2}, object(), 10**400])
)
keys = st.text() | st.integers() | st.booleans() | st.none() | st.floats(allow_nan=False)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(keys, inner, max_size=4)
        | st.tuples(inner, inner)
    ),
    max_leaves=20,
)


@settings(max_examples=400, deadline=None)
@given(values)
def test_the_same_text_or_the_same_refusal_as_the_encoder(value: Any) -> None:
    assert outcome(http._strict, value) == outcome(BEFORE, value)
    assert outcome(sqlite._dumps, value) == outcome(STORE_BEFORE, value)


@pytest.mark.parametrize(
    "value",
    [
        "plain",
        "\ud800",
        Colour.RED,
        {"a": math.nan},
        [math.inf],
        {"when": datetime(2030, 1, 1, tzinfo=UTC)},
        {1: 2, None: 3, False: 4, 1.5: 5},
        {(1, 2): 3},
        {"id": "j_0190000000000000000000000000000a", "state": "queued", "created": True},
    ],
)
def test_known_shapes(value: Any) -> None:
    assert outcome(http._strict, value) == outcome(BEFORE, value)
    assert outcome(sqlite._dumps, value) == outcome(STORE_BEFORE, value)


def test_a_value_holding_itself_is_refused_the_same_way_every_time() -> None:
    loop: list[Any] = []
    loop.append(loop)
    first = outcome(http._strict, loop)
    assert first == outcome(BEFORE, loop)
    assert first[0] == "raised"
    # the memo of containers seen is fresh each call: a refusal leaves nothing behind
    shared = [1]
    assert http._strict([shared, shared]) == "[[1],[1]]"


def test_dumps_sends_nan_as_null_as_before() -> None:
    assert http.dumps({"a": math.nan, "b": [math.inf]}) == '{"a":null,"b":[null]}'


def test_no_python_frame_of_the_encoder_runs() -> None:
    """What the cut is: json.encoder's encode and iterencode are not called."""
    called: list[str] = []

    def watch(frame: Any, event: str, arg: Any) -> None:
        if event == "call" and frame.f_code.co_filename.endswith("json/encoder.py"):
            called.append(frame.f_code.co_name)

    sys.setprofile(watch)
    try:
        http.dumps({"id": "j_1", "created": True})
        sqlite._dumps({"n": 1})
    finally:
        sys.setprofile(None)
    assert called == []

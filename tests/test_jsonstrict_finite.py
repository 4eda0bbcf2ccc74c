"""is_finite_json's quick walk in plain loops (stop 42) answers as the generator walk
did for any JSON-like value (subclasses of float, dict, list, tuple and str too), and
values nested past the recursion limit or holding themselves still take the stack
walk."""

from __future__ import annotations

import math
import sys
from collections import OrderedDict
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from chalicelib import jsonstrict


def before(value: Any) -> bool:
    def walk(value: Any) -> bool:
        if isinstance(value, float):
            return math.isfinite(value)
        if isinstance(value, dict):
            return all(walk(v) for v in value.values())
        if isinstance(value, list | tuple):
            return all(walk(v) for v in value)
        return True

    try:
        return walk(value)
    except RecursionError:
        return jsonstrict._finite_walked(value)


class Money(float):
    pass


class Name(str):
    pass


scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=3)
    | st.floats().map(Money)
    | st.text(max_size=2).map(Name)
    | st.just(object())
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.text(max_size=2), inner, max_size=4)
        | st.tuples(inner, inner)
        | st.dictionaries(st.text(max_size=2), inner, max_size=3).map(OrderedDict)
    ),
    max_leaves=25,
)


@settings(max_examples=600, deadline=None)
@given(values)
def test_the_same_answer_as_the_generator_walk(value: Any) -> None:
    assert jsonstrict.is_finite_json(value) is before(value)


def test_deep_and_self_holding_values_are_answered() -> None:
    deep: Any = math.nan
    for _ in range(sys.getrecursionlimit() * 3):
        deep = [deep]
    assert jsonstrict.is_finite_json(deep) is False
    loop: list[Any] = [1.0]
    loop.append(loop)
    assert jsonstrict.is_finite_json(loop) is True
    loop.append(math.inf)
    assert jsonstrict.is_finite_json(loop) is False


def test_no_generator_runs_for_a_small_payload() -> None:
    called: list[str] = []

    def watch(frame: Any, event: str, arg: Any) -> None:
        if event == "call":
            called.append(frame.f_code.co_name)

    sys.setprofile(watch)
    try:
        jsonstrict.is_finite_json({"n": 1, "s": "x", "f": 1.5})
    finally:
        sys.setprofile(None)
    assert "<genexpr>" not in called
    assert called.count("_finite") == 2  # the dict and its float: no frame for 1 or "x"

"""The commonest enqueue body read without a second parse (chalicelib/api/plain_job.py,
stop 42): whatever plain_job accepts, the strict validation accepts too and reads as
the same model, field for field, with the same fields set and the same types all the
way into the payload; whatever it declines goes through the strict validation as
before, so every refusal (and every 4xx body) is the one it always was."""

from __future__ import annotations

import json
import sys
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chalicelib.api import routes
from chalicelib.api.http import dumps
from chalicelib.api.plain_job import PLAIN_DEPTH, plain_job
from chalicelib.api.schemas import SERVER_OWNED
from chalicelib.errors import ValidationFailed
from chalicelib.jsonstrict import loads_strict
from chalicelib.service import EnqueueRequest


def full(item: dict[str, Any]) -> EnqueueRequest:
    """What _enqueue_request did for every body before (and still does for the rest)."""
    return EnqueueRequest.model_validate_json(
        dumps(routes.integral_floats(EnqueueRequest, item)), strict=True
    )


def shape(value: Any) -> Any:
    """A value with the type of every part spelled out (1, 1.0 and True differ)."""
    if isinstance(value, dict):
        return ("dict", [(type(k).__name__, k, shape(v)) for k, v in value.items()])
    if isinstance(value, list):
        return ("list", [shape(v) for v in value])
    if isinstance(value, float) and value != value:
        return ("float", "nan")
    return (type(value).__name__, value)


def same_model(fast: EnqueueRequest, slow: EnqueueRequest) -> None:
    assert type(fast) is type(slow) is EnqueueRequest
    assert fast.model_fields_set == slow.model_fields_set
    assert shape(fast.__dict__) == shape(slow.__dict__)
    assert fast == slow
    assert fast.model_dump_json() == slow.model_dump_json()
    assert fast.__pydantic_extra__ == slow.__pydantic_extra__
    assert fast.__pydantic_private__ == slow.__pydantic_private__


def check(item: Any) -> None:
    """Sent as a client sends it: JSON text, decoded as the route decodes it."""
    try:
        decoded = loads_strict(json.dumps(item))
    except ValueError:
        return  # not a body the route would get past its decode
    if not isinstance(decoded, dict):
        return
    fast = plain_job(decoded)
    if fast is not None:
        same_model(fast, full(decoded))
        assert routes._enqueue_request(decoded, ()) is not None


names = st.sampled_from(["echo", "a", "x" * 64, "x" * 65, "", "a b", "é", "a\n", "ok.name:1-_"])
surrogates = st.sampled_from(["\ud800", "a\udfff", "\ud83d\ude00", "😀", "\x00", "é"])
text = st.text(max_size=4) | surrogates
scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.sampled_from([2**63 - 1, 2**63, -(2**63), -(2**63) - 1, 10**30, -0])
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.sampled_from([0.0, -0.0, 1.0, 1e16, 5e-324, 1.7976931348623157e308])
    | text
)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(text, inner, max_size=3),
    max_leaves=15,
)
others = st.sampled_from(["queue", "priority", "delay", "run_at", "max_attempts", "x", "state"])


@settings(max_examples=1500, deadline=None)
@given(
    st.fixed_dictionaries({"type": names | text | scalars, "payload": json_values}),
    st.dictionaries(others, scalars, max_size=2),
    st.booleans(),
)
def test_what_the_quick_reading_takes_the_validation_reads_alike(
    item: dict[str, Any], extra: dict[str, Any], drop_payload: bool
) -> None:
    body = {**item, **extra}
    if drop_payload:
        del body["payload"]
    check(body)


valid_names = st.from_regex(r"[A-Za-z0-9_.:-]{1,64}", fullmatch=True)


@settings(max_examples=1500, deadline=None)
@given(valid_names | names, st.dictionaries(text, json_values, max_size=4))
def test_bodies_it_mostly_takes(name: str, payload: dict[str, Any]) -> None:
    """The same comparison, on bodies of the accepted shape (most are taken)."""
    check({"type": name, "payload": payload})


@pytest.mark.parametrize("depth", [PLAIN_DEPTH - 1, PLAIN_DEPTH, PLAIN_DEPTH + 1, 300])
def test_deep_payloads(depth: int) -> None:
    payload: Any = 1
    for _ in range(depth):
        payload = {"a": [payload]} if depth < 100 else [payload]
    check({"type": "echo", "payload": {"deep": payload}})


def test_the_common_body_is_read_quickly_and_as_before() -> None:
    body = loads_strict(b'{"type": "echo", "payload": {"n": 1, "s": "x", "f": 1.5, "l": [true]}}')
    fast = plain_job(body)
    assert fast is not None
    same_model(fast, full(body))


@pytest.mark.parametrize(
    "body",
    [
        {"type": "echo", "payload": {"s": "\ud800"}},
        {"type": "echo", "payload": {"\udfff": 1}},
        {"type": "echo", "payload": {"n": 2**64}},
        {"type": "echo\n", "payload": {}},
        {"type": "", "payload": {}},
        {"type": "x" * 65, "payload": {}},
        {"type": "echo", "payload": []},
        {"type": "echo", "payload": {}, "queue": "q"},
        {"type": "echo"},
    ],
)
def test_what_it_declines_takes_the_full_reading(body: dict[str, Any]) -> None:
    assert plain_job(body) is None


@pytest.mark.parametrize(
    "body",
    [
        {"type": "no such name!", "payload": {}},
        {"type": "x" * 65, "payload": {}},
        {"type": 5, "payload": {}},
        {"type": "echo", "payload": "text"},
        {"type": "echo", "payload": {"s": "\ud800"}},
        {"type": "echo", "payload": {}, "state": "done"},
    ],
)
def test_refusals_are_the_validations_own(body: dict[str, Any]) -> None:
    """These never reach plain_job's model: the same ValidationFailed as ever."""
    with pytest.raises(ValidationFailed) as refused:
        routes._enqueue_request(body, ())
    assert refused.value.message.startswith(("the job is invalid", "these fields are set"))


def test_type_and_payload_are_no_server_owned_fields() -> None:
    assert SERVER_OWNED.isdisjoint({"type", "payload"})


def test_no_second_parse_for_the_common_body() -> None:
    called: list[str] = []

    def watch(frame: Any, event: str, arg: Any) -> None:
        if event == "c_call" and "validate_json" in getattr(arg, "__name__", ""):
            called.append(arg.__name__)

    sys.setprofile(watch)
    try:
        routes._enqueue_request({"type": "echo", "payload": {"n": 1}}, ())
    finally:
        sys.setprofile(None)
    assert called == []

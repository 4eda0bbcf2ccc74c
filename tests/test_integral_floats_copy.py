"""integral_floats hands back the job's own dict when no field needs turning (stop 42),
and otherwise the same copy as before; every caller only reads what it gets. The
enqueue's checks answer the same for integral floats, server-owned fields and the
common job."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from chalicelib.api import routes
from chalicelib.api.schemas import RedriveAllRequest
from chalicelib.errors import ValidationFailed
from chalicelib.service import EnqueueRequest


def before(model: type[BaseModel], data: dict[str, Any]) -> dict[str, Any]:
    """integral_floats as it was: always a copy."""
    out = dict(data)
    for name in routes._int_fields(model):
        value = out.get(name)
        if isinstance(value, float) and value.is_integer():
            out[name] = int(value)
    return out


def typed(data: dict[str, Any]) -> list[tuple[str, type, Any]]:
    return sorted(((k, type(v), v) for k, v in data.items()), key=repr)


values = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=3)
names = st.sampled_from(["priority", "max_attempts", "limit", "type", "delay", "x"])


@settings(max_examples=400, deadline=None)
@given(st.dictionaries(names, values, max_size=5))
def test_the_same_values_as_before_and_no_copy_when_nothing_turns(data: dict[str, Any]) -> None:
    for model in (EnqueueRequest, RedriveAllRequest):
        snapshot = dict(data)
        out = routes.integral_floats(model, data)
        assert typed(out) == typed(before(model, data))
        assert typed(data) == typed(snapshot)  # never changed in place
        assert (out is data) == (typed(out) == typed(data))


def test_the_common_job_is_not_copied() -> None:
    job = {"type": "echo", "payload": {"n": 1}}
    assert routes.integral_floats(EnqueueRequest, job) is job


def test_server_owned_fields_are_still_refused_by_name() -> None:
    try:
        routes._enqueue_request({"type": "echo", "state": "done", "id": "x"}, ())
    except ValidationFailed as exc:
        assert exc.message.endswith(": id, state")
        assert exc.details == {"fields": ["id", "state"], "loc": ["id"]}
    else:
        raise AssertionError("not refused")


def test_an_integral_float_priority_is_read_as_the_int() -> None:
    read = routes._enqueue_request({"type": "echo", "priority": 5.0}, ())
    assert read.priority == 5 and type(read.priority) is int

"""ApiRequest.with_params: the request routes.py hands a route once its query is read.

It replaced dataclasses.replace on every request (stop 39); the request it gives
must be the one replace gave: every field carried, the original untouched.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from chalicelib.api.http import ApiRequest


def full_request() -> ApiRequest:
    return ApiRequest(
        headers={"x-api-key": "k", "content-type": "application/json"},
        query={"state": "dead"},
        body=b'{"type": "echo"}',
        base_path="/api",
        client="10.1.2.3",
        body_error="not base64",
        repeated=frozenset({"x-api-key"}),
        params=None,
    )


@pytest.mark.parametrize("request_", [ApiRequest(), full_request()])
def test_with_params_is_replace(request_: ApiRequest) -> None:
    params = object()
    got = request_.with_params(params)
    want = dataclasses.replace(request_, params=params)
    assert type(got) is ApiRequest
    assert got == want
    for field in dataclasses.fields(ApiRequest):  # every field, including any added later
        assert getattr(got, field.name) is getattr(want, field.name)
    assert request_.params is None  # the original is not changed
    assert got is not request_


def test_the_request_stays_frozen() -> None:
    got = full_request().with_params({"wait": 0})
    with pytest.raises(dataclasses.FrozenInstanceError):
        got.params = None  # type: ignore[misc]


@dataclasses.dataclass(frozen=True)
class RequestBefore:
    """ApiRequest's fields as they were before stop 40 gave it an __init__ of its own."""

    headers: Any = dataclasses.field(default_factory=dict)
    query: Any = dataclasses.field(default_factory=dict)
    body: bytes = b""
    base_path: str = ""
    client: str = ""
    body_error: str | None = None
    repeated: frozenset[str] = frozenset()
    params: Any = None


CALLS: list[tuple[tuple[Any, ...], dict[str, Any]]] = [
    ((), {}),
    (({"x-api-key": "k"},), {}),
    (({"a": "1"}, {"q": "2"}, b"{}", "/api", "10.0.0.1", "why", frozenset({"a"}), 5), {}),
    ((), {"body": b"x", "client": "c", "repeated": frozenset({"x-api-key"})}),
    (({"a": "1"},), {"query": {"state": "dead"}, "params": object()}),
]


@pytest.mark.parametrize(("args", "kwargs"), CALLS)
def test_the_constructor_gives_what_the_dataclass_gave(
    args: tuple[Any, ...], kwargs: dict[str, Any]
) -> None:
    """The stop 40 __init__ sets the fields straight into the instance's dict (a
    frozen dataclass's own set each through object.__setattr__): the same fields,
    positional or by name, the same defaults (a new dict each), eq, repr, replace."""
    got, want = ApiRequest(*args, **kwargs), RequestBefore(*args, **kwargs)
    names = [field.name for field in dataclasses.fields(ApiRequest)]
    assert names == [field.name for field in dataclasses.fields(RequestBefore)]
    for name in names:
        assert getattr(got, name) == getattr(want, name)
        if name in kwargs or len(args) > names.index(name):  # given: that very object
            assert getattr(got, name) is getattr(want, name)
    assert list(vars(got)) == names  # the instance's dict, in the fields' order
    assert repr(got) == repr(want).replace("RequestBefore", "ApiRequest")
    assert got == ApiRequest(*args, **kwargs)
    assert dataclasses.replace(got, client="other").client == "other"
    assert ApiRequest().headers is not ApiRequest().headers  # a new dict each
    with pytest.raises(dataclasses.FrozenInstanceError):
        got.body = b""  # type: ignore[misc]

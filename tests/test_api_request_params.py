"""ApiRequest.with_params: the request routes.py hands a route once its query is read.

It replaced dataclasses.replace on every request (stop 39); the request it gives
must be the one replace gave: every field carried, the original untouched.
"""

from __future__ import annotations

import dataclasses

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

"""A 422 whose details a broken or hostile server shaped oddly: every refusal's text
(str(exc), what a traceback, a log line or an f-string shows) is still a string.
An error's "loc" that was a number or true made str() raise TypeError, so a traceback
read "<exception str() failed>" and `f"{exc}"` in the caller's code raised in turn.
Real loopback servers."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from spool_client import ApiError, Client, RetryPolicy
from tests.canned_answers import canned_servers

KEY = "attack-s50d-key-0123456789"


@pytest.fixture
def refusing() -> Iterator[Callable[[Any], str]]:
    """A server answering 422 with the given error JSON, on every request."""
    with canned_servers() as start:
        yield lambda error: start(422, {"error": error})


ODD_LOCS = [5, True, 2.5, {"a": 1}, "payload"]


@pytest.mark.parametrize("loc", ODD_LOCS)
def test_a_validation_error_of_any_loc_has_text(refusing: Any, loc: Any) -> None:
    error = {
        "code": "validation_error",
        "message": "the job is invalid",
        "details": {"errors": [{"loc": loc, "msg": "no good"}]},
    }
    once = RetryPolicy(attempts=1)
    with (
        Client(refusing(error), KEY, timeout=5, retry=once) as spool,
        pytest.raises(ApiError) as caught,
    ):
        spool.enqueue("echo", {})
    text = str(caught.value)
    assert text.startswith("422 validation_error: the job is invalid (") and "no good" in text


@pytest.mark.parametrize("loc", ODD_LOCS)
def test_a_batch_entrys_error_of_any_loc_has_text(refusing: Any, loc: Any) -> None:
    error = {
        "code": "validation_error",
        "message": "a job is invalid",
        "details": {"errors": [{"index": 0, "details": [{"loc": loc, "msg": "no good"}]}]},
    }
    once = RetryPolicy(attempts=1)
    with (
        Client(refusing(error), KEY, timeout=5, retry=once) as spool,
        pytest.raises(ApiError) as caught,
    ):
        spool.enqueue_many([{"type": "echo"}])
    assert "job 0: " in str(caught.value) and "no good" in str(caught.value)

"""The client's errors cross a process boundary (stop 62).

Was: a Client is picklable so a multiprocessing pool can be handed one (stop 61), but
an error it raised in the pool's worker could not come back. Exception's own pickling
calls the class with its message alone, and TransportError, ApiError and most others
take more arguments: unpickling raised TypeError in the pool's result thread, which
died, so `apply_async(...).get()` waited out its timeout (and `pool.map` for ever).
Reproduced with a spawn pool calling `enqueue` on an unreachable URL.

Now every error class of spool_client comes back as itself, with its attributes.
"""

from __future__ import annotations

import multiprocessing
import pickle
from typing import Any

import pytest

from spool_client import Client
from spool_client import errors as client_errors
from spool_client.errors import (
    AnswerTooLarge,
    ApiError,
    NotFound,
    SpoolClientError,
    TooManyRequests,
    TransportError,
    UnexpectedResponse,
    WaitTimeout,
    error_for,
)

pytestmark = pytest.mark.timeout(120)


def _round_trip(error: BaseException) -> Any:
    return pickle.loads(pickle.dumps(error))


def test_a_transport_error_comes_back_with_its_tries_and_whether_it_reached() -> None:
    copy = _round_trip(TransportError("cannot reach x", 3, reached=True))
    assert type(copy) is TransportError
    assert (str(copy), copy.attempts, copy.reached) == ("cannot reach x", 3, True)


def test_an_api_error_comes_back_with_its_status_code_details_and_retry() -> None:
    error = TooManyRequests(429, "rate_limited", "slow down", {"limit": 5}, retry_after=2.5)
    error.retried_after_send = True
    copy = _round_trip(error)
    assert type(copy) is TooManyRequests
    assert (copy.status, copy.code, copy.message, copy.details) == (
        429,
        "rate_limited",
        "slow down",
        {"limit": 5},
    )
    assert (copy.retry_after, copy.retried_after_send, str(copy)) == (2.5, True, str(error))


def test_every_error_class_comes_back_as_itself() -> None:
    made: list[BaseException] = [
        UnexpectedResponse(200, "text/html", "http://x"),
        AnswerTooLarge("http://x", 10),
        WaitTimeout(None, 1.5, "j_1"),
        ApiError(418, "teapot", "no"),
    ]
    for name in dir(client_errors):
        kind = getattr(client_errors, name)
        if isinstance(kind, type) and issubclass(kind, ApiError):
            made.append(kind(400, kind.code, f"a {name}"))
    assert any(isinstance(error, NotFound) for error in made)
    for error in made:
        copy = _round_trip(error)
        assert type(copy) is type(error)
        assert str(copy) == str(error)
        assert vars(copy) == vars(error)
        assert isinstance(copy, SpoolClientError)


def test_error_for_answers_survive_too() -> None:
    error = error_for(404, {"error": {"code": "not_found", "message": "no such job"}})
    copy = _round_trip(error)
    assert type(copy) is type(error) and vars(copy) == vars(error)


def _enqueue_unreachable(client: Client) -> str:
    return client.enqueue("echo", {"n": 1}).id


def test_a_pool_gets_the_error_its_worker_raised() -> None:
    # Port 9 (discard) on loopback: nothing listens, the connection is refused at once.
    client = Client("http://127.0.0.1:9", "k" * 24, retry=None)
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        result = pool.apply_async(_enqueue_unreachable, (client,))
        with pytest.raises(TransportError) as raised:
            result.get(timeout=60)
    assert "127.0.0.1:9" in str(raised.value)
    assert raised.value.attempts >= 1

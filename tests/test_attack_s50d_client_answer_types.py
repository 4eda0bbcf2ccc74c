"""Answers whose fields have the wrong JSON type, from a broken or hostile server on
loopback: the client raises UnexpectedResponse naming the field, never hands back a
Job whose `attempts` is None, whose `payload` is a list or whose `type` is a number,
nor an Enqueued whose `created` is the string "false" read as True. Both clients."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from spool_client import AsyncClient, Client, RetryPolicy, UnexpectedResponse
from tests.canned_answers import canned_servers
from tests.test_client_probe import JOB

KEY = "attack-s50d-key-0123456789"
JOB_ID = "j_" + "a" * 32


@pytest.fixture
def answering() -> Iterator[Callable[[Any], str]]:
    """A server answering 200 with the given JSON, on every request."""
    with canned_servers() as start:
        yield lambda answer: start(200, answer)


ONCE = RetryPolicy(attempts=1)

WRONG_JOB_FIELDS = [
    ("type", 5),
    ("queue", ["default"]),
    ("priority", "high"),
    ("priority", True),
    ("attempts", None),
    ("max_attempts", 2.5),
    ("payload", [1, 2]),
    ("last_error", {"message": "x"}),
    ("idempotency_key", 7),
    ("attempt_history", "none"),
    ("webhooks", {"id": "w"}),
]


@pytest.mark.parametrize(("name", "value"), WRONG_JOB_FIELDS)
def test_a_job_field_of_the_wrong_type_is_an_unexpected_response(
    answering: Any, name: str, value: Any
) -> None:
    url = answering({**JOB, name: value})
    with (
        Client(url, KEY, timeout=5, retry=ONCE) as spool,
        pytest.raises(UnexpectedResponse) as caught,
    ):
        spool.get(JOB_ID)
    assert name in str(caught.value)


@pytest.mark.parametrize(("name", "value"), WRONG_JOB_FIELDS[:3])
def test_the_async_client_refuses_them_too(answering: Any, name: str, value: Any) -> None:
    url = answering({**JOB, name: value})

    async def get() -> None:
        async with AsyncClient(url, KEY, timeout=5, retry=ONCE) as spool:
            await spool.get(JOB_ID)

    with pytest.raises(UnexpectedResponse) as caught:
        asyncio.run(asyncio.wait_for(get(), 10))
    assert name in str(caught.value)


ENQUEUED = {"id": JOB_ID, "state": "queued", "status_url": f"/status/{JOB_ID}", "created": True}


@pytest.mark.parametrize(
    ("name", "value"), [("created", "false"), ("created", 0), ("status_url", None)]
)
def test_an_enqueue_answer_of_the_wrong_type_is_an_unexpected_response(
    answering: Any, name: str, value: Any
) -> None:
    url = answering({**ENQUEUED, name: value})
    with (
        Client(url, KEY, timeout=5, retry=ONCE) as spool,
        pytest.raises(UnexpectedResponse) as caught,
    ):
        spool.enqueue("echo", {})
    assert name in str(caught.value)


def test_well_typed_answers_still_read(answering: Any) -> None:
    """The fields' real types, nulls where the API allows them, pass as before."""
    job = {
        **JOB,
        "payload": {"a": 1},
        "result": [1, "two"],
        "last_error": None,
        "idempotency_key": None,
        "attempt_history": [],
        "webhooks": None,
    }
    with Client(answering(job), KEY, timeout=5, retry=ONCE) as spool:
        got = spool.get(JOB_ID)
    assert (got.payload, got.result, got.attempts) == ({"a": 1}, [1, "two"], 1)
    with Client(answering(ENQUEUED), KEY, timeout=5, retry=ONCE) as spool:
        assert spool.enqueue("echo", {}).created is True


@pytest.mark.parametrize("ids", [[["j_1"]], [{"id": "j_1"}], [1], ["j_1", None]])
def test_a_redrive_answer_whose_ids_are_not_strings_is_an_unexpected_response(
    answering: Any, ids: list[Any]
) -> None:
    """`spool dlq redrive --all` keeps the ids in a set: a list or an object among them
    ended it as "unexpected error: TypeError: unhashable type"."""
    url = answering({"redriven": len(ids), "ids": ids})
    with Client(url, KEY, timeout=5, retry=ONCE) as spool, pytest.raises(UnexpectedResponse):
        spool.redrive_all()

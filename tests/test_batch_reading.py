"""A batch's jobs are read in one validation when all are valid (routes._read_batch);
what it reads, and every answer a batch gets, must be what reading them one by one
gives."""

from __future__ import annotations

from typing import Any

import pytest

from chalicelib.api.routes import _enqueue_request, _read_batch
from tests.apikit import Api

VALID: list[dict[str, Any]] = [
    {"type": "echo", "payload": {"n": 1}},
    {"type": "echo", "payload": {}, "delay": 30},
    {"type": "echo", "payload": {"a": [1, 2.5, None, "x"]}, "priority": 3.0},
    {"type": "echo", "payload": {}, "run_at": "2030-01-01T00:00:00+02:00"},
    {"type": "echo", "payload": {}, "idempotency_key": "k-1", "queue": "emails"},
    {"type": "echo", "payload": {}, "max_attempts": 2, "priority": -5},
    {"type": "no_such_type", "payload": {"é": "\u2603"}},  # the type is checked later
]


def test_a_valid_batch_reads_as_each_job_reads_alone() -> None:
    read = _read_batch(VALID)
    assert read is not None
    assert read == [_enqueue_request(item, ()) for item in VALID]


@pytest.mark.parametrize(
    "bad",
    [
        {"type": "echo", "payload": {}, "delay": "30"},  # a string is not a number here
        {"type": "echo", "payload": {}, "priority": 1.5},
        {"type": "echo", "payload": []},
        {"type": "echo", "payload": {}, "state": "succeeded"},  # set by the server
        {"type": "echo", "payload": {}, "surprise": 1},
        {"payload": {}},
        ["echo"],
        "echo",
        None,
    ],
)
def test_a_batch_with_any_invalid_job_is_left_to_the_one_by_one_reading(bad: Any) -> None:
    assert _read_batch([*VALID, bad]) is None
    assert _read_batch([bad, *VALID]) is None


def _nested(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


def test_a_job_nested_as_deep_as_a_job_alone_may_be_is_taken_in_a_batch_too(api: Api) -> None:
    """Read in one document, the batch adds a level of nesting to each job: a job at
    the deepest a job alone may be must still be taken (the one-by-one reading decides)."""
    deepest = 0
    for depth in range(150, 400):
        if api.post("/enqueue", {"type": "echo", "payload": {"v": _nested(depth)}}).status != 201:
            break
        deepest = depth
    assert deepest >= 150
    job = {"type": "echo", "payload": {"v": _nested(deepest)}}
    reply = api.post("/enqueue", {"jobs": [job, {"type": "echo", "payload": {}}]})
    assert reply.status == 201, reply.body
    assert len(reply.json["jobs"]) == 2


def test_a_batch_with_one_invalid_job_names_it_and_stores_none(api: Api) -> None:
    jobs = [*VALID[:3], {"type": "echo", "payload": {}, "delay": "soon"}, VALID[0]]
    reply = api.post("/enqueue", {"jobs": jobs})
    assert reply.status == 422
    problems = reply.json["error"]["details"]
    assert [p["index"] for p in problems] == [3]
    assert api.get("/jobs").json["jobs"] == []

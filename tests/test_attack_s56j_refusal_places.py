"""Every 422 of POST /enqueue that a job's own content causes names where (s56, helper J).

A job nested past the JSON parser's depth limit was refused with `loc` [] (one job)
or ["jobs", N] (a batch): in a payload of 256 KiB the sender could not tell which
value to flatten. Now `loc` goes down to the array or object that crossed the limit
(as a lone surrogate's refusal does), and the message says the limit. The refusals
the service makes of one field (max_attempts above the ceiling, run_at too far out,
a type no handler has) and of fields the server owns named the field only as
`field`/`fields`/`type`: they now carry `loc` too, with the batch's ["jobs", N] in front.

Real HTTP to `spool serve`'s server over a socket, as a client sends it.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from chalicelib.jsonstrict import MAX_NESTING
from local.server import Server
from tests.apikit import KEY_A
from tests.served import exchange, post


def no_jobs(server: Server) -> bool:
    head = f"GET /jobs HTTP/1.1\r\nHost: x\r\nX-API-Key: {KEY_A}\r\nConnection: close\r\n\r\n"
    status, answer = exchange(server, head.encode())
    return status == 200 and answer["jobs"] == []


def objects(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = {"a": value}
    return value


def arrays(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


# The job itself is level 1, its payload 2, the payload's "x" 3: the container at level
# MAX_NESTING + 1 is the first one too deep, MAX_NESTING - 2 steps below "x".
BELOW_X = MAX_NESTING - 2
CASES = [
    ({"type": "echo", "payload": {"x": objects(250)}}, ["payload", "x", *["a"] * BELOW_X]),
    ({"type": "echo", "payload": {"ok": 1, "x": arrays(300)}}, ["payload", "x", *[0] * BELOW_X]),
    (
        {"type": "echo", "payload": {"x": [1, {"b": objects(250)}]}},
        ["payload", "x", 1, "b", *["a"] * (BELOW_X - 2)],
    ),
    ({"type": "echo", "max_attempts": 10**6}, ["max_attempts"]),
    ({"type": "echo", "run_at": "2999-01-01T00:00:00Z"}, ["run_at"]),
    ({"type": "echo", "state": "succeeded"}, ["state"]),
    ({"type": "no_such_type"}, ["type"]),
]
IDS = ["objects", "arrays", "mixed", "max_attempts", "run_at", "server_owned", "unknown_type"]


@pytest.mark.parametrize(("job", "where"), CASES, ids=IDS)
def test_one_job_is_refused_naming_the_place(
    server: Server, job: dict[str, Any], where: list[Any]
) -> None:
    status, answer = post(server, "/enqueue", json.dumps(job).encode())
    assert status == 422, answer
    error = answer["error"]
    assert error["details"]["loc"] == where
    if "payload" in where:
        assert f"more than {MAX_NESTING} levels" in error["message"]
        # The message shows the place by its ends (loc holds it whole): six steps each.
        shown = ".".join(map(str, where[:6])), ".".join(map(str, where[-6:]))
        assert f"(at {shown[0]}...({len(where) - 12} more)...{shown[1]})" in error["message"]
    assert no_jobs(server)


@pytest.mark.parametrize(("job", "where"), CASES, ids=IDS)
def test_a_batch_names_the_job_and_the_place(
    server: Server, job: dict[str, Any], where: list[Any]
) -> None:
    jobs: list[dict[str, Any]] = [{"type": "echo", "payload": {"i": i}} for i in range(4)]
    jobs.insert(2, job)
    status, answer = post(server, "/enqueue", json.dumps({"jobs": jobs}).encode())
    assert status == 422, answer
    [problem] = answer["error"]["details"]
    assert problem["index"] == 2
    assert problem["details"]["loc"] == ["jobs", 2, *where]
    assert no_jobs(server)


def test_a_typed_payload_too_deep_names_its_place(server: Server) -> None:
    job = {"type": "send_email", "payload": {"to": "a@b.example", "x": objects(250)}}
    status, answer = post(server, "/enqueue", json.dumps(job).encode())
    assert status == 422, answer
    assert answer["error"]["details"]["loc"] == ["payload", "x", *["a"] * BELOW_X]
    assert no_jobs(server)

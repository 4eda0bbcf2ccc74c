"""A job holding an unpaired UTF-16 surrogate is refused naming where it is (s55, helper G).

Every other 422 of POST /enqueue names its field (`loc`), but this one said only "a
string holds an unpaired UTF-16 surrogate" at `loc` [] (one job) or ["jobs", 57] (a
batch): in a payload of 256 KiB, or a batch of 100 jobs, the sender could not tell
which string to fix. Now `loc` goes down to the string (or the name) holding it, in
any field: type, queue, idempotency_key, a payload's value or name, at any depth.

Real HTTP to `spool serve`'s server over a socket, as a client sends it.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from local.server import Server
from tests.apikit import KEY_A
from tests.served import exchange, post


def body(value: Any) -> bytes:
    """JSON with the lone surrogate escaped as \\udXXX, as a client's encoder sends it."""
    return json.dumps(value, ensure_ascii=True).encode()


def no_jobs(server: Server) -> bool:
    head = f"GET /jobs HTTP/1.1\r\nHost: x\r\nX-API-Key: {KEY_A}\r\nConnection: close\r\n\r\n"
    status, answer = exchange(server, head.encode())
    return status == 200 and answer["jobs"] == []


CASES = [
    ({"type": "echo", "payload": {"text": "\ud800"}}, ["payload", "text"]),
    ({"type": "echo", "payload": {"a": {"b": ["ok", "x\udfff"]}}}, ["payload", "a", "b", 1]),
    ({"type": "echo", "payload": {"ok": 1, "\udc00": 1}}, ["payload", "\udc00"]),
    ({"type": "echo", "queue": "q\ud800"}, ["queue"]),
    ({"type": "echo", "idempotency_key": "k\ud800"}, ["idempotency_key"]),
    ({"type": "\ud800"}, ["type"]),
    (
        {"type": "send_email", "payload": {"to": "a@b.example", "subject": "\ud800"}},
        ["payload", "subject"],
    ),
]


@pytest.mark.parametrize(("job", "where"), CASES)
def test_one_job_with_a_lone_surrogate_is_refused_naming_its_place(
    server: Server, job: dict[str, Any], where: list[Any]
) -> None:
    status, answer = post(server, "/enqueue", body(job))
    assert status == 422, answer
    error = answer["error"]
    assert "unpaired UTF-16 surrogate" in error["message"]
    assert error["details"]["loc"] == where
    shown = ".".join(str(step) for step in where).encode("utf-8", "backslashreplace").decode()
    assert f"(at {shown})" in error["message"]
    error["message"].encode("utf-8")  # the surrogate of a name is shown escaped, not sent
    assert no_jobs(server)


@pytest.mark.parametrize(("job", "where"), CASES)
def test_a_batch_names_the_job_and_the_place_of_its_lone_surrogate(
    server: Server, job: dict[str, Any], where: list[Any]
) -> None:
    jobs: list[dict[str, Any]] = [{"type": "echo", "payload": {"i": i}} for i in range(5)]
    jobs.insert(3, job)
    status, answer = post(server, "/enqueue", body({"jobs": jobs}))
    assert status == 422, answer
    [problem] = answer["error"]["details"]
    assert problem["index"] == 3
    assert "unpaired UTF-16 surrogate" in problem["message"]
    assert problem["details"]["loc"] == ["jobs", 3, *where]
    assert no_jobs(server)

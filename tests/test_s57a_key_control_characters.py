"""An idempotency key holding a control character is refused (stop 57, helper A).

Was: POST /enqueue took any key of 1 to 200 characters, so "\\u0000", "\\n",
"\\u001b[31m" (a terminal colour), DEL and C1 characters such as U+0085 (NEL, a line
break to some readers) were stored, written into logs, shown by the dashboard and
`spool status`, and used to look jobs up. A key is the client's name for a job: now
a key with a character of Unicode category Cc (U+0000-U+001F, U+007F-U+009F) is a
422 naming the field (`details[].loc`, `type` control_character) and the character,
for one job and for a batch (which then stores none of its jobs). Lone surrogates
were refused already (tests/test_chaos_s55g_surrogate_place.py). Jobs stored before
this rule keep being read, listed and found by their key.

Real HTTP to `spool serve`'s server over a socket, as a client sends it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from chalicelib import runtime as runtime_module
from chalicelib.models import JobQuery
from chalicelib.runtime import Runtime
from local.server import Server
from tests.apikit import KEY_A, Api
from tests.factories import new_job
from tests.served import exchange, post, served

REFUSED = {
    "nul": "\u0000",
    "newline": "\n",
    "carriage-return": "\r",
    "tab": "\t",
    "escape": "\u001b[31m",
    "unit-separator": "\u001f",
    "del": "\u007f",
    "nel": "\u0085",
    "last-c1": "\u009f",
}
# Text that is no control character: each is a key as any other. (U+2028 was here: it
# is refused since stop 61, tests/test_attack_s61E_key_invisible_text.py.)
TAKEN = ["order\u00a07", "caf\u00e9-7", "\u65e5\u672c-7", "\U0001f600-7", "a b"]


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    with served(tmp_path) as running:
        yield running


def get(server: Server, target: str) -> tuple[int, Any]:
    head = f"GET {target} HTTP/1.1\r\nHost: x\r\nX-API-Key: {KEY_A}\r\nConnection: close\r\n\r\n"
    return exchange(server, head.encode())


def job_ids(server: Server) -> list[str]:
    status, answer = get(server, "/jobs")
    assert status == 200, answer
    return [job["id"] for job in answer["jobs"]]


def enqueue(server: Server, body: Any) -> tuple[int, dict[str, Any]]:
    return post(server, "/enqueue", json.dumps(body).encode())


def refusal_of(problem: list[Any], loc: list[Any], bad: str) -> None:
    """The 422 details of a refused key: one error, at `loc`, naming the field and the
    character (as U+XXXX: the character itself may be what a terminal obeys)."""
    [error] = problem
    assert error["loc"] == loc
    assert error["type"] == "control_character"
    assert error["msg"].startswith("the idempotency key holds a control character, U+")
    assert f"U+{ord(bad[0]):04X}" in error["msg"]


@pytest.mark.parametrize("bad", REFUSED.values(), ids=REFUSED.keys())
def test_one_job_whose_key_holds_a_control_character_is_refused(server: Server, bad: str) -> None:
    status, answer = enqueue(server, {"type": "echo", "idempotency_key": f"order{bad}7"})
    assert status == 422, answer
    assert answer["error"]["code"] == "validation_error"
    refusal_of(answer["error"]["details"], ["idempotency_key"], bad)
    assert job_ids(server) == []


@pytest.mark.parametrize("bad", REFUSED.values(), ids=REFUSED.keys())
def test_a_batch_with_one_such_key_stores_none_of_its_jobs(server: Server, bad: str) -> None:
    jobs: list[dict[str, Any]] = [
        {"type": "echo", "payload": {"n": n}, "idempotency_key": f"k-{n}"} for n in range(4)
    ]
    jobs[2]["idempotency_key"] = bad
    status, answer = enqueue(server, {"jobs": jobs})
    assert status == 422, answer
    [problem] = answer["error"]["details"]
    assert problem["index"] == 2
    refusal_of(problem["details"], ["jobs", 2, "idempotency_key"], bad)
    assert job_ids(server) == []


def test_a_key_of_one_control_character_is_refused_as_one(server: Server) -> None:
    """Not "at least 1 character": the length is right, the character is not."""
    status, answer = enqueue(server, {"type": "echo", "idempotency_key": "\u0000"})
    assert status == 422, answer
    refusal_of(answer["error"]["details"], ["idempotency_key"], "\u0000")


@pytest.mark.parametrize("key", TAKEN)
def test_other_text_is_a_key_as_before(server: Server, key: str) -> None:
    status, answer = enqueue(server, {"type": "echo", "idempotency_key": key})
    assert status == 201, answer
    status, job = get(server, f"/status/{answer['id']}")
    assert status == 200 and job["idempotency_key"] == key


def test_a_job_stored_before_the_rule_is_still_read_listed_and_found(server: Server) -> None:
    """Only new input is refused: a key already stored stays the job's, in every read."""
    key = "old\n\u001b[31mkey\u0085"
    store = runtime_module.current().store
    [added] = store.add([new_job(store.clock, tenant="tenant-a", idempotency_key=key)])
    job_id = added.job.id
    status, job = get(server, f"/status/{job_id}")
    assert status == 200 and job["idempotency_key"] == key
    status, page = get(server, "/jobs")
    assert status == 200 and [j["idempotency_key"] for j in page["jobs"]] == [key]
    status, found = get(server, f"/ui/api/jobs?find={quote(key, safe='')}")
    assert status == 200 and [j["id"] for j in found["jobs"]] == [job_id]
    # Sent again, the key is new input: refused, and no second job is made.
    status, answer = enqueue(server, {"type": "echo", "idempotency_key": key})
    assert status == 422, answer
    assert job_ids(server) == [job_id]


def test_the_lambda_path_refuses_it_alike(api: Api, rt: Runtime) -> None:
    """app.py's handler as API Gateway calls it (chalice's test client): the same 422,
    one job and a batch, and nothing stored."""
    reply = api.post("/enqueue", {"type": "echo", "idempotency_key": "a\u0085b"})
    assert reply.status == 422, reply.body
    refusal_of(reply.json["error"]["details"], ["idempotency_key"], "\u0085")
    batch = [{"type": "echo", "idempotency_key": "ok"}, {"type": "echo", "idempotency_key": "\n"}]
    reply = api.post("/enqueue", {"jobs": batch})
    assert reply.status == 422, reply.body
    [problem] = reply.json["error"]["details"]
    refusal_of(problem["details"], ["jobs", 1, "idempotency_key"], "\n")
    assert rt.store.list_jobs(JobQuery()).jobs == []

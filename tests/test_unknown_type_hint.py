"""A misspelt job type at enqueue: the refusal says which known type was meant.

The 422 listed the server's types in details.known, but a user who wrote
"send_emial" still had to compare the list by eye. When one known type is close
(difflib, cutoff 0.6) the message now ends "did you mean 'send_email'?"; the code
(unknown_job_type) and status (422) are as before.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator

import httpx
import pytest

from chalicelib.runtime import Runtime
from spool_client import Client, UnknownJobType
from tests.apikit import Api, installed, settings_for


@pytest.fixture
def rt(tmp_path) -> Iterator[Runtime]:
    with installed(settings_for(tmp_path, demo_handlers=True)) as runtime:
        yield runtime


def test_a_close_misspelling_is_answered_with_the_type_meant(api: Api, rt: Runtime) -> None:
    reply = api.post("/enqueue", {"type": "ecko", "payload": {}})
    assert reply.status == 422 and reply.error_code == "unknown_job_type", reply.body
    error = reply.json["error"]
    assert error["message"] == "unknown job type 'ecko'; did you mean 'echo'?", error
    assert "echo" in error["details"]["known"]


def test_a_type_like_none_of_them_gets_no_guess(api: Api, rt: Runtime) -> None:
    reply = api.post("/enqueue", {"type": "zzzzzz", "payload": {}})
    assert reply.status == 422 and reply.error_code == "unknown_job_type", reply.body
    message = reply.json["error"]["message"]
    assert message.startswith("unknown job type 'zzzzzz': no handler")  # how to add one
    assert "did you mean" not in message


def test_a_misspelling_in_a_batch_is_answered_the_same(api: Api, rt: Runtime) -> None:
    jobs = [{"type": "echo", "payload": {}}, {"type": "sleeep", "payload": {"seconds": 0}}]
    reply = api.post("/enqueue", {"jobs": jobs})  # a batch's refusal names each job's
    assert reply.status == 422 and reply.error_code == "validation_error", reply.body
    (problem,) = reply.json["error"]["details"]
    assert problem["index"] == 1, problem
    assert problem["message"] == "unknown job type 'sleeep'; did you mean 'sleep'?", problem


def _older_server(request: httpx.Request) -> httpx.Response:
    """A server from before the hint: the message has none, details list the types."""
    sent = json.loads(request.content)
    error = {
        "code": "unknown_job_type",
        "message": f"unknown job type {sent['type']!r}",
        "details": {"type": sent["type"], "known": ["add", "echo", "send_email"]},
    }
    return httpx.Response(422, json={"error": error})


def _this_server(request: httpx.Request) -> httpx.Response:
    answer = _older_server(request)
    body = json.loads(answer.content)
    body["error"]["message"] += "; did you mean 'send_email'?"
    return httpx.Response(422, json=body)


@pytest.mark.parametrize("server", [_older_server, _this_server])
def test_the_client_s_error_says_the_type_meant_once(
    server: Callable[[httpx.Request], httpx.Response],
) -> None:
    http = httpx.Client(transport=httpx.MockTransport(server))
    c = Client("http://127.0.0.1:9", "k", http=http)
    with http, c, pytest.raises(UnknownJobType) as refused:
        c.enqueue("send_emial", {"to": "a@example.com"})
    said = str(refused.value)
    assert said.count("did you mean 'send_email'?") == 1, said
    assert "this server's types: add, echo, send_email" in said, said

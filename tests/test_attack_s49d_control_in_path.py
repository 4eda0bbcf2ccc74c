"""A path parameter holding a control character, under `spool serve` and on Lambda.

Was (stop 49, found by sending `/status/%00` to each edge): both answered 404, in
different words. `spool serve` refuses a path holding a control character before
any route reads it, as no route: `no route for GET /status/\\x00: a path holds no
control character` (local/server.py). On Lambda the event's pathParameters carried
the decoded `\\x00` to the route, which looked the job up and said `job not found`
with the id in its details; a cancel looked up and answered the same.

Now app.py answers such an event as `spool serve` answers the request: the same 404,
code and message, before a route or the store sees the id.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import app as spool_app
from local.emulator import context
from tests.test_lambda_vs_served import JOB, _both, _req, gateway_event

CONTROL_PATHS = [
    _req("GET", "/status/%00"),
    _req("GET", "/status/a%01b"),
    _req("GET", "/status/%0D%0Aj_1"),
    _req("GET", "/status/x%7F"),
    _req("HEAD", "/status/%00"),
    _req("POST", "/jobs/%1f/cancel", b""),
    _req("POST", "/dlq/%09/redrive", b""),
    _req("GET", "/ui/api/jobs/%00"),
    _req("POST", "/ui/api/jobs/%00/cancel", b""),
]
# Their neighbours: characters a path may hold, served as ids on both.
NEIGHBOURS = [
    _req("GET", "/status/a%20b"),
    _req("GET", "/status/%C2%85"),
    _req("POST", "/enqueue", JOB),
]


def test_a_control_character_in_a_path_is_the_same_404_on_lambda_as_on_spool_serve(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    corpus = CONTROL_PATHS + NEIGHBOURS
    served, on_lambda = _both(tmp_path, monkeypatch, corpus)
    for request, want, got in zip(corpus, served, on_lambda, strict=True):
        assert got == want, request
    for (status, body), request in zip(served, CONTROL_PATHS, strict=False):
        assert status == 404, request
        if request[0] != "HEAD":
            assert body["error"]["message"].endswith(": a path holds no control character")


def test_the_answer_names_the_path_escaped() -> None:
    answer = spool_app.app(gateway_event(_req("GET", "/status/%00")), context("api_handler"))
    assert answer["statusCode"] == 404
    assert json.loads(answer["body"])["error"] == {
        "code": "not_found",
        "message": "no route for GET /status/\\x00: a path holds no control character",
        "details": None,
    }

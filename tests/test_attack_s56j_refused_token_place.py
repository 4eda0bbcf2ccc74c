"""A body refused for a token strict JSON forbids names where it is (s56, helper J).

NaN, Infinity, a number out of range (1e999) or that underflows (1e-400), an integer
of more than 4300 digits and an object naming a member twice are refused (400) as
not JSON. The reason's "line 1 column N" pointed at the first place the token's text
appears, which need not be the refused one (`{"a": {"y": 1}, "b": {"y": 1, "y": 2}}`
pointed into "a"), and nothing said which value it was. Now `details.loc` is the path
to it (a repeated name's path ends in that name), on one job and in a batch.

Real HTTP to `spool serve`'s server over a socket, as a client sends it.
"""

from __future__ import annotations

from typing import Any

import pytest

from local.server import Server
from tests.served import post

CASES = [
    ('{"type": "echo", "payload": {"a": {"y": 1}, "b": {"y": 1, "y": 2}}}', ["payload", "b", "y"]),
    ('{"type": "echo", "payload": {"n": 1e999}}', ["payload", "n"]),
    ('{"type": "echo", "payload": {"l": [1, 2, NaN]}}', ["payload", "l", 2]),
    ('{"type": "echo", "payload": {"x": {"t": 1e-400}}}', ["payload", "x", "t"]),
    ('{"type": "echo", "payload": {"i": -Infinity}}', ["payload", "i"]),
    ('{"type": "echo", "payload": {"big": ' + "9" * 5000 + "}}", ["payload", "big"]),
    ('{"type": "echo", "type": "echo"}', ["type"]),
]
IDS = ["repeated-name", "overflow", "nan", "underflow", "infinity", "huge-int", "top-name"]


@pytest.mark.parametrize(("body", "where"), CASES, ids=IDS)
def test_one_job_names_the_refused_token(server: Server, body: str, where: list[Any]) -> None:
    status, answer = post(server, "/enqueue", body.encode())
    assert status == 400, answer
    assert answer["error"]["details"]["loc"] == where


@pytest.mark.parametrize(("body", "where"), CASES, ids=IDS)
def test_a_batch_names_the_job_and_the_refused_token(
    server: Server, body: str, where: list[Any]
) -> None:
    batch = '{"jobs": [{"type": "echo", "payload": {"y": 1}}, ' + body + "]}"
    status, answer = post(server, "/enqueue", batch.encode())
    assert status == 400, answer
    assert answer["error"]["details"]["loc"] == ["jobs", 1, *where]

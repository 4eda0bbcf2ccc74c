"""A path id thousands of characters long (under the 16 KiB request-head limit) is
answered 404 as any unknown id, and neither the answer nor the request's log line
carries all of it: an unknown route's answer echoes at most 200 characters of the
path, a logged job id at most 100 (it made a 10 KB log line per request). Real HTTP
over a socket to `spool serve`'s server."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from local.server import Server
from tests.apikit import KEY_A
from tests.served import exchange

LONG = "a" * 10_000


def send(server: Server, method: str, target: str, key: bool = True) -> tuple[int, dict[str, Any]]:
    auth = f"X-API-Key: {KEY_A}\r\n" if key else ""
    head = f"{method} {target} HTTP/1.1\r\nHost: x\r\n{auth}Connection: close\r\n\r\n"
    status, answer = exchange(server, head.encode())
    assert isinstance(answer, dict)
    return status, answer


@pytest.mark.parametrize(
    ("method", "target"),
    [
        ("GET", f"/status/{LONG}"),
        ("GET", f"/ui/api/jobs/{LONG}"),
        ("POST", f"/jobs/{LONG}/cancel"),
        ("POST", f"/dlq/{LONG}/redrive"),
    ],
)
def test_a_very_long_job_id_is_404_and_logged_cut_short(
    server: Server, caplog: pytest.LogCaptureFixture, method: str, target: str
) -> None:
    with caplog.at_level(logging.INFO, logger="spool.http"):
        status, answer = send(server, method, target)
    assert status == 404, answer
    assert answer["error"]["code"] == "not_found"
    assert len(str(answer)) < 500
    lines = [r for r in caplog.records if r.name == "spool.http"]
    assert lines, "the request is logged"
    for record in lines:
        job_id = getattr(record, "job_id", "")
        assert job_id.startswith("a" * 100) and len(job_id) < 200, len(job_id)
        assert "(10000 chars)" in job_id


@pytest.mark.parametrize("key", [True, False])
def test_an_unknown_route_echoes_a_bounded_path(server: Server, key: bool) -> None:
    status, answer = send(server, "GET", f"/nothing/{LONG}", key=key)
    assert status == 404
    message = answer["error"]["message"]
    assert message.startswith("no route for GET /nothing/aaa")
    assert len(message) < 300 and "chars)" in message

"""`chalice local` and a request head its parser cannot read whole.

Was: Python's header parser (http.client.parse_headers, the email package's) stops
at the first line that is not `Name: value` (`X-Note : y`, a bare word) and keeps
what follows it as a "payload" http.server never looks at. Every header after that
line was dropped without a word: its X-API-Key (a 401 saying the key was missing),
its Content-Length, so the body was left unread on the connection and read as the
next request. A body that was itself a request was served: a job enqueued by bytes
that any proxy in front took for the first request's body. `spool serve` refuses
such a head with 400 (tests/test_server_abuse.py); now chalice local does too, in
the same words, and closes the connection with the body unread.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from local.http_guard import OBS_FOLD
from local.http_messages import explain
from tests.test_chalice_local import _one_exchange_kept_alive, serving_chalice_local

KEY = "s47-local-key-0123456789"


@pytest.fixture(scope="module")
def local_port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """One `chalice local --stage local` with one tenant key: its port."""
    tmp_path: Path = tmp_path_factory.mktemp("chalice-local-head")
    with serving_chalice_local(tmp_path, {**os.environ, "SPOOL_API_KEYS": f"{KEY}=s47"}) as port:
        yield port


def _jobs(port: int, queue: str) -> list[object]:
    listed = requests.get(
        f"http://127.0.0.1:{port}/jobs",
        params={"queue": queue},
        headers={"X-API-Key": KEY},
        timeout=10,
    )
    assert listed.status_code == 200, listed.text
    jobs: list[object] = listed.json()["jobs"]
    return jobs


MALFORMED = [b"X-Note : y\r\n", b"NoColonHere\r\n", b":no-name\r\n", b"X-Note: a\r\n folded\r\n"]


def test_a_first_header_line_that_starts_with_a_blank_is_folding(local_port: int) -> None:
    """A continuation with nothing before it: `spool serve` calls it folding too."""
    body = b'{"type": "echo"}'
    data = _one_exchange_kept_alive(
        local_port,
        b"POST /enqueue HTTP/1.1\r\n Host: 127.0.0.1\r\nX-API-Key: %s\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (KEY.encode(), len(body), body),
    )
    assert data.startswith(b"HTTP/1.1 400 "), data
    assert json.loads(data.partition(b"\r\n\r\n")[2])["error"]["message"] == OBS_FOLD


@pytest.mark.parametrize(
    "bad_line", MALFORMED, ids=["space-before-colon", "no-colon", "no-name", "folded"]
)
def test_a_head_with_a_line_that_is_no_header_is_refused_and_its_body_never_served(
    local_port: int, bad_line: bytes
) -> None:
    queue = "smuggled-" + str(MALFORMED.index(bad_line))
    inner_body = json.dumps({"type": "echo", "queue": queue}).encode()
    inner = (
        b"POST /enqueue HTTP/1.1\r\nHost: 127.0.0.1\r\nX-API-Key: %s\r\n"
        b"Content-Length: %d\r\nConnection: close\r\n\r\n%s"
        % (KEY.encode(), len(inner_body), inner_body)
    )
    outer = (
        b"POST /enqueue HTTP/1.1\r\nHost: 127.0.0.1\r\nX-API-Key: %s\r\n%s"
        b"Content-Length: %d\r\n\r\n%s" % (KEY.encode(), bad_line, len(inner), inner)
    )
    data = _one_exchange_kept_alive(local_port, outer)
    head, _, after = data.partition(b"\r\n\r\n")
    status_line, *lines = head.split(b"\r\n")
    sized = [int(ln.split(b":")[1]) for ln in lines if ln.lower().startswith(b"content-length:")]
    assert sized and after[sized[0] :] == b"", data  # one answer, nothing served after it
    assert int(status_line.split()[1]) == 400, data
    answer = json.loads(after[: sized[0]])
    assert answer["error"]["code"] == "bad_request"
    folded = bad_line.startswith(b"X-Note: a\r\n ")
    assert answer["error"]["message"] == (OBS_FOLD if folded else explain("Invalid header"))
    assert _jobs(local_port, queue) == []  # neither the outer nor the smuggled job


def test_a_well_formed_head_is_still_served(local_port: int) -> None:
    body = json.dumps({"type": "echo", "queue": "plain"}).encode()
    request = (
        b"POST /enqueue HTTP/1.1\r\nHost: 127.0.0.1\r\nX-API-Key: %s\r\nX-Note: a b\r\n"
        b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (KEY.encode(), len(body), body)
    )
    data = _one_exchange_kept_alive(local_port, request)
    assert data.startswith(b"HTTP/1.1 201 "), data
    assert len(_jobs(local_port, "plain")) == 1

"""`spool serve` answers only HTTP/1.x; another major version is refused (s55, helper G).

`GET /health HTTP/2` was refused (400, the request line's words) but `HTTP/2.0`,
`HTTP/3.0` or `HTTP/9.9` were served, as HTTP/1.0: waitress reads any DIGIT.DIGIT
and treats every version but 1.1 as 1.0, so a POST /enqueue sent as HTTP/2.0 stored
a job and answered in a protocol the client did not speak. RFC 9110 15.6.6: 505
for a major version the server does not support. HTTP/1.0 and HTTP/1.1 are served as
before, and so is a higher 1.x (RFC 9110 2.5: read as the highest 1.x known).

Real requests over a socket to `spool serve`'s server.
"""

from __future__ import annotations

import pytest

from local.server import Server
from tests.apikit import KEY_A
from tests.served import exchange


def enqueue(version: str) -> bytes:
    body = b'{"type": "echo"}'
    return (
        f"POST /enqueue {version}\r\nHost: x\r\nX-API-Key: {KEY_A}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    ).encode() + body


def jobs(server: Server) -> list[object]:
    head = f"GET /jobs HTTP/1.1\r\nHost: x\r\nX-API-Key: {KEY_A}\r\nConnection: close\r\n\r\n"
    status, answer = exchange(server, head.encode())
    assert status == 200
    return list(answer["jobs"])


@pytest.mark.parametrize("version", ["HTTP/2.0", "HTTP/3.0", "HTTP/9.9", "HTTP/0.9"])
def test_a_major_version_other_than_1_is_505_and_stores_nothing(
    server: Server, version: str
) -> None:
    status, answer = exchange(server, enqueue(version))
    assert status == 505, answer
    error = answer["error"]
    assert error["code"] == "http_version_not_supported"
    assert version in error["message"] and "HTTP/1.1" in error["message"]
    assert jobs(server) == []


@pytest.mark.parametrize("version", ["HTTP/1.0", "HTTP/1.1", "HTTP/1.2"])
def test_http_1_x_is_still_served(server: Server, version: str) -> None:
    status, answer = exchange(server, enqueue(version))
    assert status == 201, answer
    assert len(jobs(server)) == 1

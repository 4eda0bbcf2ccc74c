"""`chalice local` and a path with percent-escapes or a `;`.

Was (stop 49, found by sending the same odd paths to `spool serve` and `chalice
local`): chalice's route matcher (chalice.local.RouteMatcher) matched the path as
sent and captured its segments undecoded, and read it with urlparse, which drops a
`;` and what follows as "parameters". So `/status/a%2Fb` looked up the job `a%2Fb`
where `spool serve` and API Gateway look up `a/b`, `/status/%00` looked up `%00`
(`spool serve`: 404 no route, the path holds a control character), `/%68ealth` was no
route (`spool serve`: /health), and `/health;x` was served as /health, past a proxy's
rule for the path (`spool serve` and API Gateway: no route).

Now `chalice local` matches each segment decoded, split where the client put a `/`,
and captures the decoded segment, as `spool serve` does (local/server.py `_path`).
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from typing import Any

import pytest

from tests.apikit import KEY_A
from tests.edge_servers import chalice_local_port, spool_serve_port


@pytest.fixture(scope="module")
def local_port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    with chalice_local_port(tmp_path_factory.mktemp("s49d-chalice-local-paths")) as port:
        yield port


@pytest.fixture(scope="module")
def served_port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    with spool_serve_port(tmp_path_factory.mktemp("s49d-served-paths")) as port:
        yield port


def _exchange(port: int, method: str, target: str) -> tuple[int, Any]:
    lines = [f"{method} {target} HTTP/1.1", "Host: x", f"X-API-Key: {KEY_A}"]
    lines += ["Content-Length: 0", "Connection: close"]
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        chunks = []
        while chunk := conn.recv(65536):
            chunks.append(chunk)
    head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), json.loads(body)


PATHS = [
    ("GET", "/status/a%2Fb"),
    ("GET", "/status/a%2fb"),
    ("GET", "/status/%2e%2e"),
    ("GET", "/status/%ff"),
    ("GET", "/status/caf%C3%A9"),
    ("GET", "/status/a%3Bb"),
    ("GET", "/status/a;b"),
    ("GET", "/status/%00"),
    ("GET", "/ui/api/jobs/a%2Fb"),
    ("POST", "/jobs/a%2Fb/cancel"),
    ("GET", "/%68ealth"),
    ("GET", "/health;x"),
    ("GET", "/metrics;x"),
    ("GET", "/status/j_1/"),
    ("GET", "/health/"),
]


@pytest.mark.parametrize(("method", "target"), PATHS)
def test_chalice_local_reads_the_path_as_spool_serve_does(
    local_port: int, served_port: int, method: str, target: str
) -> None:
    want = _exchange(served_port, method, target)
    got = _exchange(local_port, method, target)
    assert (got[0], got[1].get("error", {}).get("code")) == (
        want[0],
        want[1].get("error", {}).get("code"),
    )
    if want[1].get("error", {}).get("code") == "not_found" and "details" in want[1]["error"]:
        assert got[1]["error"]["details"] == want[1]["error"]["details"]

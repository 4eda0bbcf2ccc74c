"""`chalice local` logs a request that timed out once, not twice.

Found from outside (stop 62, a real `chalice local --stage local` with
SPOOL_HTTP_REQUEST_TIMEOUT=1): a request whose head or body did not arrive in time
was answered 408 (chalicelib/chalice_local_http.py) and logged twice on stderr,
http.server's `Request timed out: TimeoutError('nothing more arrived within 1
seconds')` and then the 408's access line. Now only the access line remains: one
line per request, as every other request has.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path

import pytest
import requests

from tests.apikit import KEY_A
from tests.procs import stop
from tests.test_chalice_local import free_port, start_chalice_local

TIMEOUT = 1.0
BOUND = 20.0


def _until_closed(port: int, data: bytes) -> bytes:
    """Send `data`, then read all the server sends until it closes (within BOUND)."""
    with socket.create_connection(("127.0.0.1", port), timeout=BOUND) as sock:
        sock.sendall(data)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    return received


def wait_for_health(proc: subprocess.Popen[bytes], port: int) -> None:
    """Until `chalice local` on `port` answers /health (within 60 s)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            requests.get(f"http://127.0.0.1:{port}/health", timeout=5)
            return
        except requests.ConnectionError:
            time.sleep(0.2)
    pytest.fail("chalice local did not answer /health")


def test_a_timed_out_request_is_logged_once(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "SPOOL_API_KEYS": f"{KEY_A}=acme",
        "SPOOL_HTTP_REQUEST_TIMEOUT": str(TIMEOUT),
    }
    port = free_port()
    proc = start_chalice_local(tmp_path, port, env)
    try:
        wait_for_health(proc, port)
        short_body = (
            b"POST /enqueue HTTP/1.1\r\nHost: 127.0.0.1\r\nX-API-Key: "
            + KEY_A.encode()
            + b"\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{"
        )
        assert _until_closed(port, short_body).startswith(b"HTTP/1.1 408 ")
        assert _until_closed(port, b"GET /hea").startswith(b"HTTP/1.1 408 ")
    finally:
        stop(proc, 10)
    assert proc.stderr is not None
    lines = proc.stderr.read().decode().splitlines()
    assert not [line for line in lines if "timed out" in line], lines
    timed_out = [line for line in lines if line.endswith(" 408 -")]
    assert len(timed_out) == 2, lines
    assert '"POST /enqueue HTTP/1.1" 408 -' in timed_out[0], lines

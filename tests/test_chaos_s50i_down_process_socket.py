"""`spool serve --processes N` while one server process cannot be started again.

On Linux each server process has a listening socket of its own on the shared port
(SO_REUSEPORT), which the supervisor keeps open so a restarted process finds the
connections waiting for it. While a process could not start (the store down, the
SQLite file moved: it exits at start, the supervisor tries again every 2 s), the
kernel kept giving its socket a share of the new connections, and nobody accepted
them: a client waited until its own timeout (30 s in the chaos probe) while the
other processes answered at once. Now the supervisor answers them itself, 503 with
the error shape the live processes give, until the process serves again.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from local import multiproc
from local.multiproc import Supervisor, listening_sockets
from tests.procs import guarded_env, spool_serve_logged, stop
from tests.test_serve_multiproc import children_of

pytestmark = [
    pytest.mark.timeout(120),
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc"),
]

KEY = "downsock-key-0123456789"
CLIENT_TIMEOUT = 5.0  # far more than an answer takes; far less than the probe's 30 s


def ask(port: int, method: str, path: str, body: bytes = b"") -> tuple[int, bytes]:
    """One request on a new connection: (status, body), TimeoutError if unanswered."""
    head = (
        f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nX-API-Key: {KEY}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", port), timeout=CLIENT_TIMEOUT) as conn:
        conn.sendall(head.encode() + body)
        data = b""
        while chunk := conn.recv(65536):
            data += chunk
    status_line, _, answer = data.partition(b"\r\n\r\n")
    return int(status_line.split()[1]), answer


@pytest.mark.slow
def test_connections_routed_to_a_process_that_cannot_start_are_answered(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    env = guarded_env(SPOOL_STORE_URL=f"sqlite:///{data / 'spool.db'}", SPOOL_API_KEYS=f"{KEY}=a")
    log = tmp_path / "serve.log"
    served = spool_serve_logged(log, "--processes", "2", "--threads", "4", env=env)
    port = urlsplit(served.url).port
    assert port is not None
    try:
        os.rename(data, tmp_path / "moved")  # every start of a process fails from here
        os.kill(children_of(served.proc.pid)[0], signal.SIGKILL)
        deadline = time.monotonic() + 30
        while "is gone from its path" not in log.read_text():
            assert time.monotonic() < deadline, log.read_text()[-2000:]
            time.sleep(0.05)
        # The kernel picks a socket per connection by its addresses: 16 connections
        # all missing the dead process's socket is a 1 in 65536 chance.
        job = json.dumps({"type": "echo", "payload": {"n": 1}}).encode()
        statuses: list[int] = []
        for turn in range(16):
            try:
                if turn % 2:
                    status, body = ask(port, "POST", "/enqueue", job)
                else:
                    status, body = ask(port, "GET", "/status/j_missing")
            except TimeoutError:
                pytest.fail(f"a connection was left unanswered for {CLIENT_TIMEOUT:g} s")
            answered = json.loads(body)  # the live process's answer, whatever it is
            if status == 503:
                assert answered["error"]["code"] == "store_unavailable", answered
            statuses.append(status)
        assert 503 in statuses  # 16 tries: the supervisor's answer came too
        os.rename(tmp_path / "moved", data)  # the file is back: the next start serves
        deadline = time.monotonic() + 30
        while [ask(port, "GET", "/status/j_missing")[0] for _ in range(16)] != [404] * 16:
            assert time.monotonic() < deadline, "the supervisor still answers for it"
        assert served.proc.poll() is None
    finally:
        stop(served.proc, timeout=30)


@pytest.mark.parametrize("shared", [False, True], ids=["reuseport", "shared"])
def test_the_supervisor_answers_503_while_no_process_serves_a_socket(
    monkeypatch: pytest.MonkeyPatch, shared: bool
) -> None:
    """Every process exits at start (the store down): each socket, its own or the
    shared one, is answered by the supervisor, a POST's body read first."""
    if shared:
        monkeypatch.setattr(multiproc, "reuse_port_available", lambda: False)
    sockets = listening_sockets("127.0.0.1", 0, 2)
    port = sockets[0].getsockname()[1]
    supervisor = Supervisor(
        sockets,
        1,
        dict(os.environ),
        command=[sys.executable, "-c", "raise SystemExit(3)"],
        store_down=lambda: True,
    )
    for child in supervisor.children:
        supervisor.spawn(child)
    watching = threading.Thread(target=supervisor.watch, daemon=True)
    watching.start()
    try:
        for turn in range(8):
            body = b'{"type": "echo", "payload": {"pad": "' + b"x" * 20000 + b'"}}'
            status, answer = (
                ask(port, "POST", "/enqueue", body) if turn % 2 else ask(port, "GET", "/health")
            )
            assert status == 503
            assert json.loads(answer)["error"]["code"] == "store_unavailable"
    finally:
        supervisor.stop(grace=5)
        watching.join(10)
    assert not watching.is_alive()

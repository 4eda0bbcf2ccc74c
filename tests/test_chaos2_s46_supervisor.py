"""`spool serve --processes 2` when its supervisor is stopped or killed.

test_serve_multiproc.py covers a killed, crashed or hung server process and a
killed supervisor's children exiting. Round two of the chaos tests tried the
supervisor itself:

- SIGSTOP the supervisor for longer than the hang bound, then SIGCONT: its server
  processes keep answering meanwhile, and once it resumes it must not take them
  for hung (their beats piled up unread while it was stopped) and kill them.
- SIGKILL the supervisor: its children go, the port is free, and a new
  `spool serve --processes 2` on the same port starts and serves.

Both found holding: kept as regression tests.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from urllib.parse import urlsplit

import pytest
import requests

from tests.procs import spool_serve, stop
from tests.test_serve_multiproc import (
    PROCESSES,
    SPREAD,
    _env,
    alive,
    children_of,
    servers,
    serving,
    sqlite_url,  # noqa: F401 (the fixture)
    wait_for,
)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc"),
]

HANG_SECONDS = 2


@pytest.mark.timeout(120)
def test_a_stopped_supervisor_resumes_without_killing_its_healthy_processes(
    sqlite_url: str,  # noqa: F811
) -> None:
    with serving(sqlite_url, "--no-worker", SPOOL_SERVE_HANG_SECONDS=str(HANG_SECONDS)) as served:
        kids = servers(served)
        os.kill(served.proc.pid, signal.SIGSTOP)
        try:
            # Stopped for longer than the hang bound, measured by the children's work:
            # while it is stopped they answer (each connection to either socket).
            for _ in range(SPREAD):
                assert requests.get(f"{served.url}/health", timeout=5).status_code == 200
            time.sleep(HANG_SECONDS * 2)  # the scenario: stopped past the hang bound
        finally:
            os.kill(served.proc.pid, signal.SIGCONT)
        # A crash after the resume: its replacement proves the watch loop has turned
        # (it reads the beats and judges the silent before it looks for exits).
        os.kill(kids[0], signal.SIGKILL)

        def replaced() -> bool:
            now = children_of(served.proc.pid)
            return len(now) == PROCESSES and kids[0] not in now

        assert wait_for(replaced, timeout=20)
        assert kids[1] in children_of(served.proc.pid), "a healthy process was killed as hung"
        assert served.proc.poll() is None
        assert served.proc.stderr is not None
    said = served.proc.stderr.read()
    assert "has not turned its loop" not in said, said[-2000:]


@pytest.mark.timeout(120)
def test_a_killed_supervisor_leaves_its_port_to_the_next_start(
    sqlite_url: str,  # noqa: F811
) -> None:
    with serving(sqlite_url, "--no-worker") as served:
        kids = servers(served)
        port = urlsplit(served.url).port
        assert port is not None
        served.proc.kill()
        served.proc.wait(10)
        assert wait_for(lambda: not any(alive(pid) for pid in kids), timeout=15)
    again = spool_serve(
        "--processes", str(PROCESSES), "--threads", "4", "--no-worker", "--port", str(port),
        env=_env(sqlite_url),
    )  # fmt: skip
    try:
        assert again.url == served.url
        assert len(servers(again)) == PROCESSES
        for _ in range(SPREAD):  # both of the new processes' sockets answer
            assert requests.get(f"{again.url}/health", timeout=5).status_code == 200
    finally:
        stop(again.proc, timeout=30)

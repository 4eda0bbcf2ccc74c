"""`chalice local` out of file descriptors says so and serves again (stop 62, helper C).

Was (live: `prlimit --nofile=60 chalice local --stage local`, 61 keep-alive connections
opened and left idle): new requests got no answer and the server said nothing, while
its accept loop spun at about 70% of a core (359 CPU ticks in 5 s): socketserver
drops the OSError (EMFILE) get_request raises and selects again on a listening socket
that stays readable. `spool serve` says "accept() failed" and pauses
(local/http_guard.py).

Now chalice local's server says it on stderr once a shortage, with the limit to look at, and
waits a moment between tries; once the idle connections are closed (here after
SPOOL_HTTP_IDLE_TIMEOUT) the waiting request is served and it says so.
"""

from __future__ import annotations

import os
import resource
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest
import requests

from tests.apikit import KEY_A
from tests.procs import stop
from tests.test_chalice_local import ROOT, chalice_command, free_port

pytestmark = pytest.mark.timeout(180)

DESCRIPTORS = 60
IDLE = 10.0


def _nofile() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (DESCRIPTORS, DESCRIPTORS))


def _start(folder: Path, port: int) -> subprocess.Popen[bytes]:
    for name in ("app.py", "chalicelib", ".chalice"):
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(
                src, folder / name, ignore=shutil.ignore_patterns("__pycache__", "deployments")
            )
        else:
            shutil.copy(src, folder / name)
    env = {**os.environ, "SPOOL_API_KEYS": f"{KEY_A}=acme", "SPOOL_HTTP_IDLE_TIMEOUT": str(IDLE)}
    return subprocess.Popen(
        [*chalice_command(), "local", "--stage", "local", "--no-autoreload", "--port", str(port)],
        cwd=folder,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        preexec_fn=_nofile,
    )


def test_chalice_local_at_its_descriptor_limit_says_so_and_serves_again(tmp_path: Path) -> None:
    port = free_port()
    proc = _start(tmp_path, port)
    held: list[socket.socket] = []
    try:
        deadline = time.monotonic() + 60
        while proc.poll() is None and time.monotonic() < deadline:
            try:
                requests.get(f"http://127.0.0.1:{port}/health", timeout=5)
                break
            except requests.ConnectionError:
                time.sleep(0.2)
        # More connections than descriptors, sent nothing: the server's threads wait on
        # them until SPOOL_HTTP_IDLE_TIMEOUT, and accept() runs out before that.
        for _ in range(DESCRIPTORS + 10):
            try:
                held.append(socket.create_connection(("127.0.0.1", port), timeout=IDLE))
            except TimeoutError:
                break  # the listen backlog is full: the server accepts no more
        answer = requests.get(f"http://127.0.0.1:{port}/health", timeout=120)
        assert answer.status_code == 200
    finally:
        for sock in held:
            sock.close()
        stop(proc, 10)
    assert proc.stderr is not None
    log = proc.stderr.read().decode("utf-8", "replace")
    refused = [line for line in log.splitlines() if "accept() failed" in line]
    # Once a shortage, not once a refused accept (four a second while it lasts): the
    # lines alternate, each shortage ended by the accept that works again. (Another
    # may start as idle connections close and more connect: how many is the load's.)
    said = [line for line in log.splitlines() if line.startswith("chalice local: accept()")]
    assert refused and "Too many open files" in refused[0] and "ulimit -n" in refused[0], log
    assert [("works again" in line) for line in said] == [False, True] * len(refused), log

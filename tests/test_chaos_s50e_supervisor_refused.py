"""`spool serve --processes N` when the system refuses to start a server process
again (out of descriptors, processes or memory: EMFILE, EAGAIN, ENOMEM), after one
was killed under it.

The refusal raised out of the supervisor's watch: the whole server stopped at the
first one, the healthy server process and the built-in worker too, with "spool:
unexpected error: OSError: [Errno 24] Too many open files". Now the start is tried
again as a quick exit is: a refusal that passes leaves the server serving with all
its processes, one that lasts ends in one line naming it, exit 1. The refusal is
made real: the supervisor's descriptor limit lowered to what it has open (prlimit).
"""

from __future__ import annotations

import os
import resource
import signal
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import requests

from tests.procs import Served, guarded_env, spool_serve_logged, stop
from tests.test_serve_multiproc import alive, children_of

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(120),
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prlimit, /proc"),
]

KEY = "refused-key-0123456789"


def wait_for(check: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


@contextmanager
def two_processes(tmp_path: Path) -> Iterator[tuple[Served, Path]]:
    env = guarded_env(
        SPOOL_STORE_URL=f"sqlite:///{tmp_path}/spool.db", SPOOL_API_KEYS=f"{KEY}=acme"
    )
    log = tmp_path / "serve.log"
    served = spool_serve_logged(log, "--processes", "2", "--threads", "4", "--no-worker", env=env)
    try:
        wait_for(lambda: len(children_of(served.proc.pid)) == 2, "the processes never started")
        yield served, log
    finally:
        stop(served.proc, timeout=30)


def refuse_new_descriptors(pid: int) -> None:
    """The supervisor may open no more descriptors than it has open now."""
    count = len(os.listdir(f"/proc/{pid}/fd"))
    hard = resource.prlimit(pid, resource.RLIMIT_NOFILE)[1]  # kept: it may be raised back
    resource.prlimit(pid, resource.RLIMIT_NOFILE, (count, hard))


def kill_one(served: Served) -> int:
    victim = children_of(served.proc.pid)[0]
    os.kill(victim, signal.SIGKILL)
    return victim


def test_a_refused_restart_is_tried_again_and_the_server_serves_on(tmp_path: Path) -> None:
    with two_processes(tmp_path) as (served, log):
        pid = served.proc.pid
        limits = resource.prlimit(pid, resource.RLIMIT_NOFILE)
        refuse_new_descriptors(pid)
        victim = kill_one(served)
        wait_for(lambda: "cannot be started again" in log.read_text(), "no refusal was said")
        resource.prlimit(pid, resource.RLIMIT_NOFILE, limits)  # the shortage passes
        wait_for(
            lambda: len(children_of(pid)) == 2 and victim not in children_of(pid),
            f"no replacement started; the supervisor {'runs' if alive(pid) else 'is gone'}",
        )
        for _ in range(10):  # fresh connections: both sockets answer
            assert requests.get(f"{served.url}/health", timeout=10).status_code == 200
        assert "unexpected error" not in log.read_text()


def test_a_lasting_refusal_stops_the_server_with_a_line_naming_it(tmp_path: Path) -> None:
    with two_processes(tmp_path) as (served, log):
        refuse_new_descriptors(served.proc.pid)
        kill_one(served)
        assert served.proc.wait(60) == 1
        said = log.read_text()
    assert "server process 0 cannot be started again" in said or (
        "server process 1 cannot be started again" in said
    )
    assert "Too many open files); stopping" in said
    assert "unexpected error" not in said

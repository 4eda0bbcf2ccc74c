"""`spool serve --processes N` on SQLite whose folder is moved (or whose file is
deleted) while it runs, and one of its server processes is then restarted.

Every running process answers 503 "deleted or replaced" (docs/operations.md). But a
replacement server process opened the path afresh and made a new, empty database
there: it answered 201 for jobs no worker ran (the supervisor's is on the moved
file), beside processes answering 503, and the folder made again hid where the
store had gone. Now a server process started by the supervisor makes no store: a
file gone from the path is its reason not to start, the supervisor restarts it
every 2 s as while the store is down, and nothing is made at the path.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import pytest

from tests.procs import guarded_env, spool_serve_logged, stop
from tests.test_serve_multiproc import children_of

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(120),
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc"),
]


def test_a_restarted_server_process_makes_no_new_store_where_the_old_was(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    db = data / "spool.db"
    env = guarded_env(SPOOL_STORE_URL=f"sqlite:///{db}", SPOOL_API_KEYS="moved-key-0123456789=a")
    log = tmp_path / "serve.log"
    served = spool_serve_logged(log, "--processes", "2", "--threads", "4", env=env)
    try:
        deadline = time.monotonic() + 30
        while len(children_of(served.proc.pid)) < 2:
            assert time.monotonic() < deadline, "the server processes never started"
            time.sleep(0.05)
        os.rename(data, tmp_path / "moved")
        os.kill(children_of(served.proc.pid)[0], signal.SIGKILL)
        deadline = time.monotonic() + 30
        while "is gone from its path" not in log.read_text():
            assert not db.exists(), "a server process made a new store at the path"
            assert time.monotonic() < deadline, log.read_text()[-2000:]
            time.sleep(0.05)
        assert not data.exists()
        assert served.proc.poll() is None  # restarted as while the store is down
    finally:
        stop(served.proc, timeout=30)
    assert (tmp_path / "moved" / "spool.db").exists()

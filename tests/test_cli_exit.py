"""`spool` exits when its work is done, whatever threads a handler left running."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from tests.procs import guarded_env

SPOOL = Path(sys.executable).with_name("spool")

HANDLERS = """
import threading
from chalicelib.handlers import handler

@handler("leaves_a_thread")
def leaves_a_thread(payload):
    # Not a daemon thread (a pool thread would hand its own daemon flag on): Python
    # waits for it at exit.
    threading.Thread(target=threading.Event().wait, name="left-behind", daemon=False).start()
    return "started"
"""


def spool_with(
    tmp_path: Path, module: str, source: str
) -> Callable[..., subprocess.CompletedProcess[str]]:
    """`spool ARGS...` on a SQLite store in tmp_path, with `source` as SPOOL_HANDLERS."""
    (tmp_path / f"{module}.py").write_text(source)
    env = guarded_env(
        SPOOL_STORE_URL=f"sqlite:///{tmp_path}/spool.db",
        SPOOL_HANDLERS=module,
        PYTHONPATH=str(tmp_path),
    )

    def spool(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(SPOOL), *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
        )

    return spool


def test_a_worker_exits_past_a_non_daemon_thread_a_handler_left_running(tmp_path: Path) -> None:
    """Before: `spool worker --burst` printed `done:` and then hung, silent, forever."""
    spool = spool_with(tmp_path, "stray_handlers", HANDLERS)
    assert spool("enqueue", "leaves_a_thread").returncode == 0
    began = time.monotonic()
    ran = spool("worker", "--burst")
    assert ran.returncode == 0, ran.stderr
    assert time.monotonic() - began < 40  # the grace (5 s) and start-up, not forever
    assert "done: 1 succeeded" in ran.stderr
    assert "exiting without waiting for 1 thread(s) a handler started" in ran.stderr
    assert "(left-behind)" in ran.stderr


CRASHING = """
import ctypes
from chalicelib.handlers import handler

@handler("crashes_the_interpreter", max_attempts=1)
def crashes_the_interpreter(payload):
    ctypes.string_at(0)  # a C extension's bad pointer: SIGSEGV
"""


def test_a_handler_that_crashes_the_interpreter_is_named_in_the_worker_s_last_words(
    tmp_path: Path,
) -> None:
    """The process died with no line naming the job's handler: faulthandler now prints
    every thread's stack as it goes."""
    spool = spool_with(tmp_path, "crashing_handlers", CRASHING)
    assert spool("enqueue", "crashes_the_interpreter").returncode == 0
    ran = spool("worker", "--burst")
    assert ran.returncode != 0
    assert "Segmentation fault" in ran.stderr
    assert 'crashing_handlers.py", line 7 in crashes_the_interpreter' in ran.stderr

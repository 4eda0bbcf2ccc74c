"""`spool serve --processes N` asked to stop while its server processes are still
starting (a handler module slow to import: a big library, a model loaded at import).

The supervisor waited for every server process to be ready (up to 60 s) before it
looked at the stop: it said "stopping", then went on starting, printed its banner
and only then stopped. Now a stop asked during start-up stops the processes being
started at once, prints no banner, and exits 0.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tests.procs import ROOT, guarded_env, stop
from tests.test_serve_multiproc import children_of

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(120),
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc"),
]

SLOW_IMPORT = 30  # seconds a server process spends importing the handler module

HANDLERS = textwrap.dedent(
    f"""
    import sys
    import time

    from chalicelib.handlers import handler

    if "--listen-fd" in sys.argv:  # the server processes only, not the supervisor
        time.sleep({SLOW_IMPORT})


    @handler("quick")
    def quick(payload):
        return payload
    """
)


def test_a_stop_during_start_up_is_not_held_until_the_processes_are_ready(
    tmp_path: Path,
) -> None:
    (tmp_path / "slow_handlers.py").write_text(HANDLERS)
    env = guarded_env(
        PYTHONPATH=f"{tmp_path}:{ROOT}",
        SPOOL_HANDLERS="slow_handlers",
        SPOOL_STORE_URL=f"sqlite:///{tmp_path}/spool.db",
        SPOOL_API_KEYS="slow-key-0123456789=acme",
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "local.cli", "serve", "--port", "0", "--processes", "2"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while len(children_of(proc.pid)) < 2:  # the supervisor is starting them
            assert time.monotonic() < deadline, "the server processes never started"
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        started = time.monotonic()
        out, err = proc.communicate(timeout=SLOW_IMPORT + 60)
        took = time.monotonic() - started
    finally:
        stop(proc)
    assert proc.returncode == 0, err
    assert took < SLOW_IMPORT / 2, f"the stop waited {took:.1f} s for the start"
    assert "serving app.py" not in out  # no banner for a server that never served

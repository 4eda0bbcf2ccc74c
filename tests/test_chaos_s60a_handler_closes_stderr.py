"""A handler that closes the worker's stderr or stdout loses no log line (stop 60, helper a).

Was (found with a real `spool worker --burst` and a handler module): a handler that
ran `sys.stderr.close()`, `sys.stderr = None` or `os.close(2)` took every later line
of the worker with it, its own job's `succeeded` line included, and the `done:`
summary; the process exited 0 having said nothing. (A descriptor 2 closed so is the
next one a socket or file gets: lines could have gone into a connection.)

Now Spool's log handler writes to its own copy of descriptor 2 (chalicelib/
std_streams.py), whatever the handler does to sys.stderr; after the attempt the worker
opens what was closed again and says once, on spool.worker, which handler's job it
found it after. A handler that swaps sys.stderr for its own stream and leaves it
there does not take the log lines either.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.procs import ROOT, run_spool

pytestmark = pytest.mark.timeout(120)

HANDLERS = (
    "import io, os, sys\n"
    "from chalicelib.handlers import handler\n\n\n"
    "@handler('closer', max_attempts=1)\n"
    "def closer(payload: dict) -> dict:\n"
    "    how = payload['how']\n"
    "    if how == 'close':\n"
    "        sys.stderr.close()\n"
    "    elif how == 'none':\n"
    "        sys.stderr = None\n"
    "    elif how == 'fd':\n"
    "        os.close(2)\n"
    "    elif how == 'stdout':\n"
    "        sys.stdout.close()\n"
    "        os.close(1)\n"
    "    elif how == 'swap':\n"
    "        sys.stderr = io.StringIO()\n"
    "    return {}\n\n\n"
    "@handler('later', max_attempts=1)\n"
    "def later(payload: dict) -> dict:\n"
    "    print('later printed', flush=True)\n"
    "    print('later printed to stderr', file=sys.stderr, flush=True)\n"
    "    raise RuntimeError('later failed')\n"
)


def _module(tmp_path: Path) -> dict[str, str]:
    (tmp_path / "myapp").mkdir()
    (tmp_path / "myapp" / "__init__.py").write_text("")
    (tmp_path / "myapp" / "jobs.py").write_text(HANDLERS)
    return {"SPOOL_HANDLERS": "myapp.jobs", "PYTHONPATH": f"{tmp_path}:{ROOT}"}


@pytest.mark.parametrize("how", ["close", "none", "fd", "stdout", "swap"])
def test_the_worker_logs_on_after_a_handler_closes_a_stream(tmp_path: Path, how: str) -> None:
    env = _module(tmp_path)
    for job_type, payload, priority in (
        ("closer", f'{{"how": "{how}"}}', "9"),
        ("later", "{}", "0"),
    ):
        added = run_spool(
            tmp_path, "enqueue", job_type, "--payload", payload, "--priority", priority, **env
        )
        assert added.returncode == 0, added.stderr
    ran = run_spool(tmp_path, "worker", "--burst", "--concurrency", "1", **env)
    log = ran.stderr
    assert ran.returncode == 0, log
    assert "job succeeded event=succeeded" in log and "type=closer" in log, log
    assert "job dead event=dead" in log and "later failed" in log, log
    mended = [line for line in log.splitlines() if "WARNING spool.worker: a handler" in line]
    if how == "swap":  # nothing closed: nothing to say, and no line lost
        assert mended == [], log
        return
    # Once for each thing closed: sys.stdout and descriptor 1 are two.
    assert len(mended) == (2 if how == "stdout" else 1), log
    stream = "stdout" if how == "stdout" else "stderr"
    for line in mended:
        assert f"stream={stream}" in line and "type=closer" in line, line
    assert "later printed to stderr" in log, log  # sys.stderr works again for handlers
    if how == "stdout":  # a print is its job's log line (stop 61), on the stdout mended
        printed = [line for line in log.splitlines() if "spool.handler: later printed job" in line]
        assert len(printed) == 1 and "stream=stdout" in printed[0], log
    assert "done: 1 succeeded" in log, log  # the CLI's own summary

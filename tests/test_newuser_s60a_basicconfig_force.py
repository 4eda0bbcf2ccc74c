"""A handler module's logging.basicConfig(force=True) keeps Spool's lines whole (stop 60, a).

Was (found with a real `spool worker --burst` and a handler module that begins, as
many scripts do, with `logging.basicConfig(level=logging.INFO, force=True)`): force
removed Spool's root handler for a bare `LEVEL:logger:message` one, so every later
line lost its fields (`ERROR:spool.jobs:job dead`, no job id, no error), its masking
(an API key a payload held printed as sent) and its escapes (the payload's newline
started a line of its own).

Now the runtime, once the handler modules are imported, and the worker, after each
attempt, find Spool's handlers gone and format and mask through the handlers found
on the root instead (as it does a host's: Lambda's, chalice local's), with a
WARNING on spool.logs once.
"""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path

import pytest

from chalicelib import logs
from chalicelib.config import Settings
from tests.procs import ROOT, run_spool

pytestmark = pytest.mark.timeout(120)

KEY = "s60a-basic-key-0123456789abcdef"
NOTE = f"bad\n2026-12-06T23:00:00.000Z INFO spool.jobs: FORGED {KEY}"
HANDLERS = (
    "import logging\n"
    "from chalicelib.handlers import JobContext, handler\n\n"
    "logging.basicConfig(level=logging.INFO, force=True)\n\n\n"
    "@handler('bc', max_attempts=1)\n"
    "def bc(payload: dict, ctx: JobContext) -> dict:\n"
    "    ctx.log.info('note %s', payload['note'])\n"
    "    raise RuntimeError(payload['note'])\n"
)


def test_a_module_s_basic_config_keeps_the_worker_s_lines_whole(tmp_path: Path) -> None:
    (tmp_path / "myapp").mkdir()
    (tmp_path / "myapp" / "__init__.py").write_text("")
    (tmp_path / "myapp" / "jobs.py").write_text(HANDLERS)
    env = {
        "SPOOL_HANDLERS": "myapp.jobs",
        "PYTHONPATH": f"{tmp_path}:{ROOT}",
        "SPOOL_API_KEYS": f"{KEY}=acme",
    }
    added = run_spool(tmp_path, "enqueue", "bc", "--payload", json.dumps({"note": NOTE}), **env)
    assert added.returncode == 0, added.stderr
    ran = run_spool(tmp_path, "worker", "--burst", "--quiet", **env)
    log = ran.stderr
    assert ran.returncode == 0, log
    assert KEY not in log, log
    assert [
        line for line in log.splitlines() if "FORGED" in line and "spool.jobs: FORGED" in line[:60]
    ] == [], log
    [dead] = [line for line in log.splitlines() if "job dead" in line]
    assert "ERROR spool.jobs: job dead event=dead job_id=j_" in dead, dead
    assert 'error="RuntimeError: bad\\n' in dead, dead
    said = [line for line in log.splitlines() if "WARNING spool.logs: the root logger" in line]
    assert len(said) == 1, log


def test_handlers_cleared_get_spool_s_own_back() -> None:
    first, second = io.StringIO(), io.StringIO()
    root = logging.getLogger()
    before = list(root.handlers)
    logs.configure(Settings(), stream=first, force=True)
    mine = logging.StreamHandler(second)
    try:
        for handler in list(root.handlers):
            if handler not in before:
                root.removeHandler(handler)
        root.addHandler(mine)  # what basicConfig(force=True) leaves
        logs.keep_on_root()
        logging.getLogger("spool.test").warning("line\nnext", extra={"job_id": "j_1"})
        logs.keep_on_root()  # nothing more to do, nothing more said
    finally:
        logs.reset()
        root.removeHandler(mine)
    assert first.getvalue() == ""
    lines = second.getvalue().splitlines()
    assert len(lines) == 2, lines
    assert "WARNING spool.logs: the root logger's handlers were replaced" in lines[0]
    assert lines[1].endswith("WARNING spool.test: line\\nnext job_id=j_1"), lines
    assert mine.formatter is None and not mine.filters  # reset puts it back as it was

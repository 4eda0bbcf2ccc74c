"""`chalice local` writes each of Spool's log lines once, masked.

A newcomer who ran the README's `chalice local` line saw every Spool line twice: once
on stdout as a bare message (`job enqueued`, `POST /enqueue 201`), once on stderr in
Spool's format. The chalice command gives the root logger a stdout handler of its
own before it loads app.py, and Spool added its stderr handler beside it. The bare
copy was written before Spool's masking filter ran, so a secret an admit check's
traceback quoted (a SPOOL_SECRET_VARIABLES value) was on stdout in clear while the
stderr copy said `***`. Now Spool formats and masks through the handler chalice
set up, as it does through the Lambda runtime's: one line per record, on stdout.
"""

from __future__ import annotations

import shutil
import subprocess
import textwrap
import time
from pathlib import Path

import pytest
import requests

from tests.procs import ROOT, guarded_env, stop
from tests.test_chalice_local import chalice_command, free_port

KEY = "local-key-s47-0123456789"
TOKEN = "tok-partner-Secret-4711"
HANDLERS = textwrap.dedent(
    """
    import os

    from chalicelib.handlers import handler


    def check(payload, tenant):
        raise RuntimeError("partner refused token " + os.environ["PARTNER_TOKEN"])


    @handler("partner_call", admit=check)
    def partner_call(payload):
        return {}
    """
)


def _project(tmp_path: Path) -> Path:
    """The files `chalice local` serves, with a handler module under chalicelib/ as
    docs/handlers.md says (`SPOOL_HANDLERS=chalicelib.jobs`)."""
    project = tmp_path / "project"
    project.mkdir()
    shutil.copy(ROOT / "app.py", project / "app.py")
    for name in ("chalicelib", ".chalice"):
        ignore = shutil.ignore_patterns("__pycache__", "deployments")
        shutil.copytree(ROOT / name, project / name, ignore=ignore)
    (project / "chalicelib" / "partner_s47.py").write_text(HANDLERS)
    return project


def _serve_and_enqueue(project: Path, port: int, out: Path, err: Path) -> None:
    env = guarded_env(
        SPOOL_API_KEYS=f"{KEY}=demo",
        SPOOL_HANDLERS="chalicelib.partner_s47",
        SPOOL_SECRET_VARIABLES="PARTNER_TOKEN",
        PARTNER_TOKEN=TOKEN,
    )
    command = [*chalice_command(), "local", "--stage", "local", "--no-autoreload"]
    with out.open("wb") as stdout, err.open("wb") as stderr:
        proc = subprocess.Popen(
            [*command, "--port", str(port)], cwd=project, env=env, stdout=stdout, stderr=stderr
        )
        try:
            base = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 60
            while proc.poll() is None and time.monotonic() < deadline:
                try:
                    requests.get(f"{base}/health", timeout=5)
                    break
                except requests.ConnectionError:
                    time.sleep(0.2)
            made = _enqueue(base, "echo")
            assert made.status_code == 201, made.text
            crashed = _enqueue(base, "partner_call")
            assert crashed.status_code == 503, crashed.text
        finally:
            stop(proc, 10)


def _enqueue(base: str, job_type: str) -> requests.Response:
    return requests.post(
        f"{base}/enqueue", json={"type": job_type}, headers={"X-API-Key": KEY}, timeout=30
    )


@pytest.mark.timeout(120)
def test_each_spool_line_is_written_once_and_masked(tmp_path: Path) -> None:
    out, err = tmp_path / "stdout.txt", tmp_path / "stderr.txt"
    _serve_and_enqueue(_project(tmp_path), free_port(), out, err)
    written = out.read_text() + err.read_text()
    enqueued = [line for line in written.splitlines() if "job enqueued" in line]
    assert len(enqueued) == 1, written
    assert "event=enqueued" in enqueued[0]  # Spool's format, not a bare message
    assert "partner refused token ***" in written, written
    assert TOKEN not in written

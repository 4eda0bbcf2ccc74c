"""`spool status ID` as a person reads it (a table of attempts and the last traceback)
and as a program reads it (--json), from real `spool` processes on a SQLite file."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from local.status_view import HEADERS
from tests.procs import guarded_env

REPO = Path(__file__).resolve().parent.parent

HANDLERS = """
from chalicelib.handlers import handler


def connect(attempt):
    raise ConnectionRefusedError(f"smtp.example.test:25 refused (try {attempt})")


@handler("flaky_mail", max_attempts=4, backoff=(0.0, 0.0))
def flaky_mail(payload, ctx):
    if ctx.attempt <= payload.get("fail", 0):
        connect(ctx.attempt)
    return {"sent": ctx.attempt}


@handler("chatty", max_attempts=1)
def chatty(payload, ctx):
    ctx.log.info("connecting to smtp.example.test")
    ctx.log.warning("relay said 451, giving up")
    raise RuntimeError("relay refused")


@handler("terse", max_attempts=1)
def terse(payload, ctx):
    ctx.log.info("one line only")
    raise RuntimeError("refused")
"""


def spool(tmp_path: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    env = guarded_env(
        SPOOL_STORE_URL=f"sqlite:///{tmp_path}/spool.db",
        SPOOL_HANDLERS="attempt_jobs",
        PYTHONPATH=str(REPO),
    )
    return subprocess.run(
        [sys.executable, "-m", "local.cli", *argv],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    (tmp_path / "attempt_jobs.py").write_text(HANDLERS)
    return tmp_path


def enqueue_and_work(workdir: Path, fail: int) -> str:
    added = spool(
        workdir, "enqueue", "flaky_mail", "--json", "--payload", json.dumps({"fail": fail})
    )
    assert added.returncode == 0, added.stderr
    ran = spool(workdir, "worker", "--burst", "--quiet")
    assert ran.returncode == 0, ran.stderr
    return str(json.loads(added.stdout)["id"])


def test_status_prints_a_table_of_attempts_and_the_last_traceback(workdir: Path) -> None:
    job_id = enqueue_and_work(workdir, fail=4)  # every attempt fails: dead after 4
    shown = spool(workdir, "status", job_id)
    assert shown.returncode == 0, shown.stderr
    out = shown.stdout
    assert f"job       {job_id}" in out
    assert "state     dead, attempt 4 of 4" in out
    lines = out.splitlines()
    header = next(i for i, line in enumerate(lines) if line.strip().startswith("#  started"))
    assert all(h in lines[header] for h in HEADERS)
    rows = [line.split() for line in lines[header + 1 : header + 5]]
    assert [r[0] for r in rows] == ["1", "2", "3", "4"]
    outcomes = [next(c for c in r if c in ("retrying", "dead")) for r in rows]
    assert outcomes == ["retrying", "retrying", "retrying", "dead"]
    host = socket.gethostname()
    assert all(any(c.startswith(host + ":") for c in r) for r in rows)  # where: host:pid:tag
    assert "ConnectionRefusedError: smtp.example.test:25 refused (try 4)" in lines[header + 4]
    assert "traceback of attempt 4 (dead," in out
    assert out.rstrip().endswith("ConnectionRefusedError: smtp.example.test:25 refused (try 4)")
    assert 'attempt_jobs.py", line' in out and "in connect" in out


def test_status_prints_the_last_failures_log_lines(workdir: Path) -> None:
    added = spool(workdir, "enqueue", "chatty", "--json")
    assert added.returncode == 0, added.stderr
    assert spool(workdir, "worker", "--burst", "--quiet").returncode == 0
    job_id = json.loads(added.stdout)["id"]
    shown = spool(workdir, "status", job_id)
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    start = lines.index("log of attempt 1 (its last 2 lines):")
    assert lines[start + 1 : start + 3] == [
        "  INFO connecting to smtp.example.test",
        "  WARNING relay said 451, giving up",
    ]
    assert lines[start + 3].startswith("traceback of attempt 1 (dead,")


def test_status_says_one_log_line_in_the_singular(workdir: Path) -> None:
    added = spool(workdir, "enqueue", "terse", "--json")
    assert added.returncode == 0, added.stderr
    assert spool(workdir, "worker", "--burst", "--quiet").returncode == 0
    shown = spool(workdir, "status", json.loads(added.stdout)["id"])
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    start = lines.index("log of attempt 1 (its last line):")
    assert lines[start + 1] == "  INFO one line only"


def test_status_json_keeps_machine_output_with_the_history(workdir: Path) -> None:
    job_id = enqueue_and_work(workdir, fail=2)  # fails twice, then sends
    shown = spool(workdir, "status", job_id, "--json")
    assert shown.returncode == 0, shown.stderr
    data = json.loads(shown.stdout)
    assert (data["id"], data["state"], data["attempts"]) == (job_id, "succeeded", 3)
    assert data["result"] == {"sent": 3}
    history = data["attempt_history"]
    assert [(a["number"], a["outcome"]) for a in history] == [
        (1, "retrying"),
        (2, "retrying"),
        (3, "succeeded"),
    ]
    assert history[0]["error_type"] == "ConnectionRefusedError"
    assert history[0]["next_delay"] == 0.0
    assert history[1]["traceback"].endswith("refused (try 2)\n")
    assert history[2]["error"] is None and history[2]["traceback"] is None


def test_status_of_a_job_not_yet_run_says_so(workdir: Path) -> None:
    added = spool(workdir, "enqueue", "flaky_mail", "--json", "--delay", "1h")
    job_id = json.loads(added.stdout)["id"]
    shown = spool(workdir, "status", job_id)
    assert shown.returncode == 0, shown.stderr
    assert "state     queued, attempt 0 of 4" in shown.stdout
    assert "no attempts recorded yet" in shown.stdout

"""A job enqueued on a store no worker serves says so (stop 59, helper d).

Was (`spool enqueue echo` on a fresh SQLite store, no `spool worker` or `spool serve`
running): the command printed `j_...  queued  created` and nothing else, and `spool
status J --wait` then waited in silence until its time ran out (or for ever without
one). A new user who had not started a worker could not tell a slow job from one that
nothing will ever run.

Now the local enqueue looks once at the store's worker heartbeats (what `spool top`
and the dashboard count as live) and, when none was seen within
SPOOL_WORKER_LIVE_SECONDS, or none takes the job's queue, says so on stderr with the
command that starts one; `status --wait` says the same once, after a few seconds of a
job still waiting. (The HTTP API is unchanged: a server's enqueue reads nothing more.)
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.procs import ROOT, guarded_env, spool_serve, stop

pytestmark = pytest.mark.timeout(90)


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    return guarded_env(
        SPOOL_STORE_URL=f"sqlite:///{tmp_path}/spool.db", SPOOL_DEMO_HANDLERS="true", **extra
    )


def _spool(env: dict[str, str], *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "local.cli", *argv],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def _beaten(tmp_path: Path) -> bool:
    try:
        with sqlite3.connect(tmp_path / "spool.db") as db:
            return bool(db.execute("SELECT count(*) FROM workers").fetchone()[0])
    except sqlite3.OperationalError:  # not made yet
        return False


def _worker(tmp_path: Path, env: dict[str, str]) -> subprocess.Popen[str]:
    """`spool worker`, once its first heartbeat is in the store (bounded: 30 s)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "local.cli", "worker"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    for _ in range(300):
        if _beaten(tmp_path):
            return proc
        assert proc.poll() is None, "spool worker ended"
        time.sleep(0.1)
    stop(proc)
    raise AssertionError("spool worker recorded no heartbeat in 30 s")


def test_an_enqueue_with_no_worker_says_how_to_start_one(tmp_path: Path) -> None:
    done = _spool(_env(tmp_path), "enqueue", "echo")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("j_")
    [line] = done.stderr.splitlines()
    assert line.startswith("spool: note: no worker has been seen on this store"), line
    assert "`spool worker`" in line and "60 s" in line, line


def test_no_note_while_a_worker_runs(tmp_path: Path) -> None:
    env = _env(tmp_path)
    _spool(env, "db", "status")  # nothing: the worker makes the store
    worker = _worker(tmp_path, env)
    try:
        done = _spool(env, "enqueue", "echo")
    finally:
        stop(worker)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""


def test_a_worker_of_other_queues_is_named(tmp_path: Path) -> None:
    env = _env(tmp_path)
    worker = _worker(tmp_path, {**env, "SPOOL_QUEUES": "emails"})
    try:
        done = _spool(env, "enqueue", "echo")
    finally:
        stop(worker)
    assert done.returncode == 0, done.stderr
    [line] = done.stderr.splitlines()
    assert "no live worker takes queue 'default'" in line, line
    assert "SPOOL_QUEUES=default spool worker" in line, line


def test_status_wait_says_why_it_is_still_waiting(tmp_path: Path) -> None:
    env = _env(tmp_path)
    job_id = _spool(env, "enqueue", "echo").stdout.split()[0]
    done = _spool(env, "status", job_id, "--wait", "4s")
    assert done.returncode == 3, done.stderr
    [line] = done.stderr.splitlines()
    assert line.startswith(f"spool: note: {job_id} is still queued"), line
    assert "no worker has been seen on this store" in line, line


def test_status_wait_on_a_server_without_workers_says_why(tmp_path: Path) -> None:
    """`spool serve --no-worker` (or a server whose workers are stopped): the wait asks
    the dashboard's overview once, after a few seconds, for the live workers it counts
    (the enqueue's fast path reads nothing more)."""
    key = "s59d-no-worker-key-0123456789"
    env = _env(tmp_path, SPOOL_API_KEYS=f"{key}=acme")
    served = spool_serve("--no-worker", env=env)
    try:
        remote = {**env, "SPOOL_URL": served.url, "SPOOL_API_KEY": key}
        made = _spool(remote, "enqueue", "echo")
        assert made.returncode == 0 and made.stderr == "", made.stderr
        done = _spool(remote, "status", made.stdout.split()[0], "--wait", "4s")
    finally:
        stop(served.proc)
    assert done.returncode == 3, done.stderr
    [line] = done.stderr.splitlines()
    assert line.startswith(f"spool: note: {made.stdout.split()[0]} is still queued"), line
    assert "the server has seen no worker in the last 60 s" in line, line

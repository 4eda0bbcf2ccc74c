"""SIGHUP stops `spool worker` and `spool serve` as SIGTERM does, unless it is ignored.

A closed terminal or a dropped ssh session sends SIGHUP to the command running in
it. Found by a chaos run (helper E, stop 41): SIGHUP killed the worker at once, as a
SIGKILL would: the job it ran stayed `running` with its attempt spent until the
lease lapsed (a last attempt buried unrun), its held outcomes were lost and it never
signed off. A SIGHUP the process was started with ignored (`nohup spool worker &`)
stays ignored: the worker runs on.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from chalicelib.models import JobState
from local import serve
from tests.procs import guarded_env
from tests.test_cli import REPO, SPOOL_ENQUEUE_SLEEP, db, start_worker, state_of

__all__ = ["db"]  # the fixture, used by name


def _enqueue_sleep(env: dict[str, str]) -> str:
    add = subprocess.run(
        [*SPOOL_ENQUEUE_SLEEP, "--json"], cwd=REPO, env=env, capture_output=True, text=True
    )
    assert add.returncode == 0, add.stderr
    return str(json.loads(add.stdout)["id"])


def _wait_for(db: Path, job_id: str, state: JobState, worker: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 30
    while state_of(db, job_id) is not state:
        assert time.monotonic() < deadline, f"the job never became {state.value}"
        assert worker.poll() is None, "the worker exited"
        time.sleep(0.02)


@pytest.mark.timeout(60)
def test_sighup_finishes_the_running_job_then_exits(db: Path) -> None:
    env = guarded_env(PYTHONPATH=str(REPO))
    job_id = _enqueue_sleep(env)
    worker = start_worker(env, concurrency=1)
    try:
        _wait_for(db, job_id, JobState.RUNNING, worker)
        worker.send_signal(signal.SIGHUP)
        _, err = worker.communicate(timeout=30)
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
    assert worker.returncode == 0, err
    assert "1 succeeded" in err
    assert state_of(db, job_id) is JobState.SUCCEEDED


def _ignore_sighup() -> None:
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # what nohup does before exec


@pytest.mark.timeout(60)
def test_a_worker_started_under_nohup_runs_on_after_sighup(db: Path) -> None:
    env = guarded_env(PYTHONPATH=str(REPO))
    first = _enqueue_sleep(env)
    worker = subprocess.Popen(
        [sys.executable, "-m", "local.cli", "worker", "--concurrency", "1"],
        cwd=REPO,
        env=env,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=_ignore_sighup,
    )
    try:
        _wait_for(db, first, JobState.RUNNING, worker)
        worker.send_signal(signal.SIGHUP)
        # A stopping worker claims nothing new: a job enqueued after the hangup and
        # run shows the worker went on.
        second = _enqueue_sleep(env)
        _wait_for(db, second, JobState.SUCCEEDED, worker)
        worker.send_signal(signal.SIGTERM)
        _, err = worker.communicate(timeout=30)
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
    assert worker.returncode == 0, err
    assert "2 succeeded" in err


def test_stop_signals_take_sighup_unless_it_is_ignored() -> None:
    before = signal.getsignal(signal.SIGHUP)
    try:
        signal.signal(signal.SIGHUP, signal.SIG_DFL)
        with serve.StopSignals() as signals:
            assert signal.getsignal(signal.SIGHUP) == signals._handle
        assert signal.getsignal(signal.SIGHUP) == signal.SIG_DFL  # restored
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        with serve.StopSignals():
            assert signal.getsignal(signal.SIGHUP) == signal.SIG_IGN
    finally:
        signal.signal(signal.SIGHUP, before)

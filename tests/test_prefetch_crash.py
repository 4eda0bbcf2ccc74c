"""A worker killed by a handler while other claimed jobs wait behind it: those jobs
never started, so after restarts they run on their first attempt, not dead.

Real `spool worker` processes on a SQLite file (tests/prefetch_crash_handlers.py).
The killer runs after enough quick jobs that the worker claims ahead, and waits
until the jobs behind it are claimed (`running`) before it ends the process. Those
jobs allow one attempt each: counted at the claim, as before, one crash buried them
unrun. The killer itself kills every worker that runs it, and must still end dead
on its own attempts (a crash inside a handler spends its attempt)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from chalicelib.clock import SystemClock
from chalicelib.models import JobState
from chalicelib.storage import open_store
from chalicelib.storage.base import LEASE_EXPIRED_ERROR
from tests.factories import new_job
from tests.prefetch_crash_handlers import KILL_TYPE, RECORD_DIR_ENV, RECORD_TYPE, WARM_TYPE

REPO = Path(__file__).resolve().parent.parent
WARM_JOBS = 150
WAITING_JOBS = 5
TIME_LIMIT = 90.0


def _enqueue(url: str) -> tuple[str, list[str]]:
    clock = SystemClock()
    store = open_store(url)
    try:
        warm = [new_job(clock, WARM_TYPE, priority=10, payload={}) for _ in range(WARM_JOBS)]
        waiting = [
            new_job(clock, RECORD_TYPE, max_attempts=1, payload={}) for _ in range(WAITING_JOBS)
        ]
        waiting_ids = [j.id for j in waiting]
        killer = new_job(
            clock, KILL_TYPE, priority=5, max_attempts=2, payload={"waiting": waiting_ids}
        )
        store.add([*warm, killer, *waiting])
    finally:
        store.close()
    return killer.id, waiting_ids


def _settled(url: str, killer: str, waiting: list[str]) -> bool:
    store = open_store(url)
    try:
        dead = store.get(killer)
        done = [store.get(i) for i in waiting]
    finally:
        store.close()
    return (
        dead is not None
        and dead.state is JobState.DEAD
        and all(j is not None and j.state is JobState.SUCCEEDED for j in done)
    )


@pytest.mark.timeout(180)
def test_jobs_claimed_behind_a_handler_that_kills_the_worker_keep_their_attempt(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 'spool.db'}"
    records = tmp_path / "records"
    records.mkdir()
    killer, waiting = _enqueue(url)
    env = {
        **os.environ,
        "SPOOL_STORE_URL": url,
        "SPOOL_HANDLERS": "tests.prefetch_crash_handlers",
        "SPOOL_LEASE_SECONDS": "2",
        RECORD_DIR_ENV: str(records),
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    }
    command = [sys.executable, "-m", "local.cli", "worker", "--concurrency", "1", "--quiet"]
    crashes: list[int] = []
    started = time.monotonic()
    proc = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL)
    try:
        while time.monotonic() - started < TIME_LIMIT:
            time.sleep(0.2)
            if proc.poll() is not None:
                crashes.append(proc.returncode)
                if proc.returncode != 3 or len(crashes) > 2:
                    break  # not the killer's doing, or more than it may do: see below
                proc = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL)
            elif _settled(url, killer, waiting):
                break
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    kills = (records / "kills.log").read_text().splitlines()
    # The first worker died with every waiting job claimed behind the killer.
    assert kills[0] == "1 " + ",".join(["running"] * WAITING_JOBS), kills
    assert crashes == [3, 3], crashes  # the killer ran twice, once a worker
    store = open_store(url)
    try:
        dead = store.get(killer)
        assert dead is not None
        assert (dead.state, dead.attempts, dead.last_error) == (
            JobState.DEAD,
            2,
            LEASE_EXPIRED_ERROR,
        )
        for job_id in waiting:
            job = store.get(job_id)
            assert job is not None
            assert (job.state, job.attempts) == (JobState.SUCCEEDED, 1), job_id
            assert [a.outcome for a in store.attempts(job_id) or []] == ["succeeded"]
    finally:
        store.close()
    executions = (records / "executions.log").read_text().split()
    assert sorted(executions) == sorted(waiting)  # each ran once

"""A worker whose host clock runs ahead leaves nothing stuck when it is killed.

Leases and worker beats are times. A store with a clock of its own (Postgres,
Redis) must be the one clock they are read against: a worker on a host an hour
ahead otherwise writes leases that expire an hour late and beats an hour in the
future. After a kill -9 of that worker its running job stayed leased (no other
worker could take it back) and the worker was listed live, both for as long as
its clock was ahead (an hour here), where a true clock frees them within the
lease and the beat window.

Real processes: the skewed worker is `spool worker` under tests/skewed_clock.py;
the worker that takes over and the test itself run on the true clock. Waits are
generous bounds on the way to a state, never assertions on speed.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from chalicelib.models import JobState
from chalicelib.storage import open_store
from tests.crash_handlers import RECORD_DIR_ENV
from tests.crash_harness import _enqueue, _executions
from tests.pg_support import fresh_schema
from tests.procs import ROOT, guarded_env
from tests.redis_support import private_server

pytestmark = pytest.mark.timeout(180)

BOUND = 60.0  # generous next to the 2 s lease and beat window; far short of the skew
AHEAD = 3600.0  # the skewed host's clock, seconds ahead of the store's
LEASE = "2"


def until(predicate: Callable[[], bool], what: str, bound: float = BOUND) -> None:
    deadline = time.monotonic() + bound
    while not predicate():
        assert time.monotonic() < deadline, f"never happened: {what}"
        time.sleep(0.02)


@contextmanager
def spool_worker(
    url: str, work: Path, name: str, ahead: float = 0.0
) -> Iterator[subprocess.Popen[bytes]]:
    """`spool worker` (concurrency 1, 2 s leases, a beat every 0.5 s) with its host
    clock `ahead` seconds on; its log is work/NAME.log."""
    records = work / "records"
    records.mkdir(parents=True, exist_ok=True)
    env = guarded_env(
        SPOOL_STORE_URL=url,
        SPOOL_HANDLERS="tests.crash_handlers",
        SPOOL_LEASE_SECONDS=LEASE,
        SPOOL_HEARTBEAT_SECONDS="0.5",
        PYTHONPATH=str(ROOT),
        **{RECORD_DIR_ENV: str(records)},
    )
    command = [sys.executable, "-m", "tests.skewed_clock", str(ahead), "worker"]
    command += ["--concurrency", "1"]
    with open(work / f"{name}.log", "wb") as out:
        proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=out)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _state(url: str, job_id: str) -> JobState | None:
    store = open_store(url)
    try:
        job = store.get(job_id)
        return job.state if job else None
    finally:
        store.close()


def _live(url: str, pid: int) -> bool:
    """Whether the worker of process `pid` beat within the last 3 s (six beats)."""
    store = open_store(url)
    try:
        return any(f":{pid}:" in beat.worker for beat in store.live_workers(3.0))
    finally:
        store.close()


def _killed_ahead_worker_frees_its_job(url: str, work: Path) -> None:
    [job] = _enqueue(url, 1, 1.0)  # runs for a second: long enough to be killed in
    with spool_worker(url, work, "ahead", ahead=AHEAD) as ahead:
        until(lambda: _executions(work / "records")[job] == 1, "the skewed worker starts it")
        ahead.send_signal(signal.SIGKILL)
        ahead.wait()
        assert _live(url, ahead.pid)  # it beat a moment ago
    with spool_worker(url, work, "true") as true:
        until(lambda: _state(url, job) is JobState.SUCCEEDED, "another worker finishes it")
        true.send_signal(signal.SIGTERM)
        assert true.wait(BOUND) == 0, (work / "true.log").read_text()
    until(lambda: not _live(url, ahead.pid), "the killed worker stops counting as live")
    assert _executions(work / "records")[job] == 2  # the killed attempt, then the one that ended it


def test_a_killed_postgres_worker_whose_clock_runs_ahead_frees_its_job(tmp_path: Path) -> None:
    with fresh_schema() as url:
        _killed_ahead_worker_frees_its_job(url, tmp_path)


def test_a_killed_redis_worker_whose_clock_runs_ahead_frees_its_job(tmp_path: Path) -> None:
    with private_server(tmp_path / "redis") as server:
        _killed_ahead_worker_frees_its_job(server.url, tmp_path)

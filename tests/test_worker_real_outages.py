"""A real `spool worker` process rides out real store outages.

- Redis: a private redis-server (AOF fsynced on every write, so a SIGKILL loses
  nothing) is killed under a running worker while a job runs, and started again.
  The worker stays up, says the outage once and its end once, writes the result it
  held, and every job ran exactly once.
- A stop (SIGTERM) during such an outage ends the worker within a bound, naming
  the job whose result it could not write.
- Redis starts asking for a password the worker does not have: waiting cannot fix
  that (a new password is read at start), so the worker exits saying why.
- Postgres: the network to it is cut (a forwarder in front of the shared server,
  which is never stopped) while a job runs, then restored: the same.
- SQLite: another process holds the database file locked past the store's patience
  while jobs finish; once it lets go, their results are written.

Waits are generous bounds on the way to a state, never assertions on speed.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from chalicelib.models import JobState
from chalicelib.storage import open_store
from tests.crash_handlers import RECORD_DIR_ENV
from tests.crash_harness import _enqueue, _executions
from tests.pg_proxy import PgProxy
from tests.pg_support import fresh_schema, with_port
from tests.procs import ROOT, guarded_env
from tests.redis_support import private_server

pytestmark = pytest.mark.timeout(240)

BOUND = 90.0  # generous: how long any state may take to arrive on a loaded machine


def until(predicate: Callable[[], bool], what: str, bound: float = BOUND) -> None:
    deadline = time.monotonic() + bound
    while not predicate():
        assert time.monotonic() < deadline, f"never happened: {what}"
        time.sleep(0.1)


def states(url: str, ids: list[str]) -> dict[str, JobState | None]:
    store = open_store(url)
    try:
        return {i: (job.state if (job := store.get(i)) else None) for i in ids}
    finally:
        store.close()


def succeeded(url: str, ids: list[str]) -> bool:
    try:
        return all(s is JobState.SUCCEEDED for s in states(url, ids).values())
    except Exception:  # the store is still coming back
        return False


@contextmanager
def spool_worker(url: str, work: Path) -> Iterator[tuple[subprocess.Popen[bytes], Path]]:
    records = work / "records"
    records.mkdir(parents=True, exist_ok=True)
    log = work / "worker.log"
    env = guarded_env(
        SPOOL_STORE_URL=url,
        SPOOL_HANDLERS="tests.crash_handlers",
        SPOOL_LEASE_SECONDS="60",
        PYTHONPATH=str(ROOT),
        **{RECORD_DIR_ENV: str(records)},
    )
    command = [sys.executable, "-m", "local.cli", "worker", "--concurrency", "2"]
    with open(log, "wb") as out:
        proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=out)
    try:
        yield proc, log
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def lines(log: Path, start: str) -> list[str]:
    text = log.read_text(errors="replace")
    return [line for line in text.splitlines() if f"spool.worker: {start}" in line]


def test_a_worker_rides_out_a_redis_restart_and_writes_the_result_it_held(
    tmp_path: Path,
) -> None:
    with private_server(tmp_path / "redis") as server:
        url = server.url
        first = _enqueue(url, 3, 0.0)
        with spool_worker(url, tmp_path) as (proc, log):
            until(lambda: succeeded(url, first), "the first jobs succeed")
            [held] = _enqueue(url, 1, 1.0)  # runs for a second
            until(lambda: _executions(tmp_path / "records")[held] == 1, "the job starts")
            server.kill()  # it finishes while the store is down: its result is held
            until(lambda: bool(lines(log, "store unavailable")), "the outage is said")
            time.sleep(2.0)  # an outage of several backoff rounds
            assert proc.poll() is None, log.read_text()
            server.start()
            until(lambda: succeeded(url, [held]), "the held result is written")
            after = _enqueue(url, 2, 0.0)
            until(lambda: succeeded(url, after), "new jobs run after the outage")
            assert proc.poll() is None, log.read_text()
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(BOUND) == 0, log.read_text()
        store = open_store(url)
        try:
            job = store.get(held)
            assert job is not None and job.attempts == 1
        finally:
            store.close()
    runs = _executions(tmp_path / "records")
    assert runs == Counter({i: 1 for i in [*first, held, *after]})
    assert len(lines(log, "store unavailable")) == 1, log.read_text()
    assert len(lines(log, "store is back")) == 1, log.read_text()
    assert "Traceback" not in log.read_text()


def test_a_stop_during_a_redis_outage_ends_the_worker_naming_what_it_could_not_write(
    tmp_path: Path,
) -> None:
    with private_server(tmp_path / "redis") as server:
        url = server.url
        with spool_worker(url, tmp_path) as (proc, log):
            [held] = _enqueue(url, 1, 0.5)
            until(lambda: _executions(tmp_path / "records")[held] == 1, "the job starts")
            server.kill()
            until(lambda: bool(lines(log, "store unavailable")), "the outage is said")
            proc.send_signal(signal.SIGTERM)
            proc.wait(BOUND)  # raises TimeoutExpired if the stop is not bounded
        [gave_up] = [line for line in log.read_text().splitlines() if "not written" in line]
        assert held in gave_up


def test_a_worker_waits_out_a_sqlite_file_held_locked_by_another_process(
    tmp_path: Path,
) -> None:
    db = tmp_path / "spool.db"
    url = f"sqlite:///{db}"
    ids = _enqueue(url, 2, 0.5)
    with spool_worker(url, tmp_path) as (proc, log):
        until(lambda: len(_executions(tmp_path / "records")) == 2, "both jobs start")
        locker = sqlite3.connect(db, isolation_level=None, timeout=60)
        try:
            locker.execute("BEGIN EXCLUSIVE")  # their results meet a locked file
            until(lambda: bool(lines(log, "store unavailable")), "the outage is said")
            assert proc.poll() is None, log.read_text()
        finally:
            locker.execute("ROLLBACK")
            locker.close()
        until(lambda: succeeded(url, ids), "the held results are written")
        assert proc.poll() is None, log.read_text()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(BOUND) == 0, log.read_text()
    assert _executions(tmp_path / "records") == Counter({i: 1 for i in ids})
    assert len(lines(log, "store unavailable")) == 1, log.read_text()
    assert len(lines(log, "store is back")) == 1, log.read_text()
    assert os.path.exists(db)


def test_a_worker_rides_out_a_cut_to_postgres_and_writes_the_result_it_held(
    tmp_path: Path,
) -> None:
    proxy = PgProxy()
    try:
        with fresh_schema() as direct:
            url = with_port(direct, proxy.port)
            with spool_worker(url, tmp_path) as (proc, log):
                [held] = _enqueue(direct, 1, 1.0)  # runs for a second
                until(lambda: _executions(tmp_path / "records")[held] == 1, "the job starts")
                proxy.cut()  # it finishes while the database is out of reach
                until(lambda: bool(lines(log, "store unavailable")), "the outage is said")
                time.sleep(2.0)  # an outage of several backoff rounds
                assert proc.poll() is None, log.read_text()
                proxy.restore()
                until(lambda: succeeded(direct, [held]), "the held result is written")
                after = _enqueue(direct, 2, 0.0)
                until(lambda: succeeded(direct, after), "new jobs run after the outage")
                proc.send_signal(signal.SIGTERM)
                assert proc.wait(BOUND) == 0, log.read_text()
            runs = _executions(tmp_path / "records")
            assert runs == Counter({i: 1 for i in [held, *after]})
    finally:
        proxy.close()
    assert len(lines(log, "store unavailable")) == 1, log.read_text()
    assert len(lines(log, "store is back")) == 1, log.read_text()
    assert "Traceback" not in log.read_text()
    # The store's and the driver's own lines are not one per retry either.
    text = log.read_text()
    assert text.count("LISTEN connection lost") <= 1, text
    assert text.count("error connecting in") <= 1, text


def test_a_worker_whose_credentials_redis_starts_refusing_exits_saying_why(
    tmp_path: Path,
) -> None:
    import redis

    with private_server(tmp_path / "redis") as server:
        url = server.url
        with spool_worker(url, tmp_path) as (proc, log):
            first = _enqueue(url, 1, 0.0)
            until(lambda: succeeded(url, first), "a job runs")
            admin = redis.Redis(port=server.port, socket_timeout=5)
            try:
                admin.config_set("requirepass", "rotated")  # a password rotated under it
                admin.execute_command("CLIENT", "KILL", "TYPE", "normal")  # not this one
            finally:
                admin.close()
            returncode = proc.wait(BOUND)  # raises TimeoutExpired if it waits for ever
        text = log.read_text()
        assert returncode != 0, text
        assert "the store refused this process's credentials" in text
        assert "rotated" not in text

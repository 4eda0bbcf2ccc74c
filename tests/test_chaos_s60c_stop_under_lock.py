"""A real `spool worker` told to stop while an admin holds a lock on Spool's jobs table.

`LOCK TABLE jobs IN ACCESS EXCLUSIVE MODE` in another session (a migration by hand,
a VACUUM FULL, a CLUSTER) makes every claim and every read of jobs wait. Told to stop
then, the worker waited for its claim's whole statement_timeout, then for the read
that asks whether the claim had committed for another: 57 s with the default 30 s
(stop 60, helper C). A stop now gives each store call at most stop_flush_seconds
(5 s), after which the server is asked to cancel it: the worker exits 0 within a
bound set by its handlers, not by the lock, says why in its last lines, and a job
whose result it could not write stays `running` under its lease (claimable once it
lapses: not lost, not finished twice).

The URLs here set statement_timeout=120, so the old wait (240 s) cannot pass for
the new one within the generous bound. A second Ctrl-C still stops at once (130).
"""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from chalicelib.errors import StoreUnavailable
from chalicelib.handlers import Registry
from chalicelib.models import JobState
from chalicelib.storage import sqlite_gate
from chalicelib.storage.sqlite import from_url as sqlite_store
from chalicelib.worker import Worker, WorkerConfig
from tests.crash_harness import _enqueue, _executions
from tests.factories import new_job
from tests.moto_proc import moto_server
from tests.pg_support import admin_connect, fresh_schema
from tests.procs import guarded_env, spool_serve_logged, stop
from tests.test_worker_real_outages import spool_worker, states, until

pytestmark = pytest.mark.timeout(180)

STOP_BOUND = 40.0  # generous: the old stop took 2 x statement_timeout (240 s here)


@contextmanager
def locked_jobs(url: str) -> Iterator[None]:
    """An admin's session holding `LOCK TABLE jobs IN ACCESS EXCLUSIVE MODE` on
    the URL's schema until the block ends."""
    schema = dict(p.split("=", 1) for p in url.split("?", 1)[1].split("&"))["schema"]
    admin = admin_connect()
    admin.autocommit = False
    try:
        admin.execute(f'LOCK TABLE "{schema}".jobs IN ACCESS EXCLUSIVE MODE')
        yield
    finally:
        admin.rollback()
        admin.close()


def last_lines(log: Path, count: int = 6) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-count:])


def wait_for_exit(proc: subprocess.Popen[bytes], log: Path) -> int:
    try:
        return proc.wait(STOP_BOUND)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the worker did not stop within {STOP_BOUND}s:\n{log.read_text()}")


@pytest.fixture
def url() -> Iterator[str]:
    with fresh_schema(statement_timeout="120") as made:
        yield made


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_an_idle_worker_stops_promptly_under_a_table_lock(
    url: str, tmp_path: Path, signum: signal.Signals
) -> None:
    with spool_worker(url, tmp_path) as (proc, log):
        until(lambda: "spool worker:" in log.read_text(), "the worker starts")
        with locked_jobs(url):
            # The worker's next claim (or its read of when work is due) waits on the lock.
            threading.Event().wait(2.0)
            proc.send_signal(signum)
            code = wait_for_exit(proc, log)
        text = log.read_text(errors="replace")
    assert code == 0, text
    assert "while the worker stops" in text, text
    assert "waits it out" not in text.split("stopping:", 1)[1], text
    assert "Traceback" not in text, text


def test_a_result_the_lock_keeps_out_is_let_go_and_its_job_stays_claimable(
    url: str, tmp_path: Path
) -> None:
    with spool_worker(url, tmp_path) as (proc, log):
        until(lambda: "spool worker:" in log.read_text(), "the worker starts")
        [job] = _enqueue(url, 1, 1.0)  # runs for a second
        until(lambda: _executions(tmp_path / "records")[job] == 1, "the job starts")
        with locked_jobs(url):
            proc.send_signal(signal.SIGTERM)
            code = wait_for_exit(proc, log)
        text = log.read_text(errors="replace")
    assert code == 0, text
    assert "outcome_unwritten" in text and job in last_lines(log), text
    # Left as the claim wrote it: running under this worker's lease, which lapses and
    # lets another worker take it (as after a crash); not finished, not lost.
    assert states(url, [job]) == {job: JobState.RUNNING}
    assert _executions(tmp_path / "records")[job] == 1


def test_a_second_ctrl_c_stops_at_once_under_a_table_lock(url: str, tmp_path: Path) -> None:
    with spool_worker(url, tmp_path) as (proc, log):
        until(lambda: "spool worker:" in log.read_text(), "the worker starts")
        with locked_jobs(url):
            threading.Event().wait(1.0)
            proc.send_signal(signal.SIGINT)
            until(lambda: "Ctrl-C again stops at once" in log.read_text(), "the stop is said")
            proc.send_signal(signal.SIGINT)
            code = wait_for_exit(proc, log)
    assert code == 130, log.read_text()
    assert "spool: interrupted." in log.read_text()


# -- SQLite: another program holds the file's write lock (`BEGIN EXCLUSIVE` in sqlite3) --


@contextmanager
def exclusive(path: Path) -> Iterator[None]:
    holder = sqlite3.connect(path, isolation_level=None)
    try:
        holder.execute("BEGIN EXCLUSIVE")
        yield
    finally:
        holder.execute("ROLLBACK")
        holder.close()


def test_a_hurried_sqlite_write_gives_up_before_the_busy_timeout(tmp_path: Path) -> None:
    """Each try at a result under such a lock waited the whole 10 s busy timeout, so a
    stop with a one-second handler took 21 s; hurried, a write waits its hurry."""
    store = sqlite_store(f"sqlite:///{tmp_path}/spool.db")
    try:
        job = new_job(store.clock)
        store.hurry(1.0)
        with exclusive(tmp_path / "spool.db"):
            started = time.monotonic()
            with pytest.raises(StoreUnavailable, match="stayed locked"):
                store.add([job])
            waited = time.monotonic() - started
        # Generous: the busy timeout it waited before is 10 s.
        assert waited < sqlite_gate.PATIENCE * 0.8, waited
        store.hurry(None)
        store.add([job])  # the usual patience again, and the lock gone
    finally:
        store.close()


def test_a_worker_stopped_under_a_sqlite_write_lock_leaves_its_job_claimable(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path}/spool.db"
    with spool_worker(url, tmp_path) as (proc, log):
        until(lambda: "spool worker:" in log.read_text(), "the worker starts")
        [job] = _enqueue(url, 1, 1.0)  # runs for a second
        until(lambda: _executions(tmp_path / "records")[job] == 1, "the job starts")
        with exclusive(tmp_path / "spool.db"):
            proc.send_signal(signal.SIGTERM)
            code = wait_for_exit(proc, log)
        text = log.read_text(errors="replace")
    assert code == 0, text
    assert "while the worker stops" in text and job in last_lines(log), text
    assert states(url, [job]) == {job: JobState.RUNNING}
    assert _executions(tmp_path / "records")[job] == 1


def test_spool_serve_stops_promptly_under_a_table_lock(url: str, tmp_path: Path) -> None:
    """`spool serve`'s built-in worker too: its drain's claim is cancelled at once, and
    it no longer asks the store when work falls due once stopped (that read waited
    a hurried call's 6 s more)."""
    log = tmp_path / "serve.log"
    env = guarded_env(
        SPOOL_STORE_URL=url,
        SPOOL_API_KEYS="key-s60c-0123456789abcdef=t1",
        SPOOL_DEMO_HANDLERS="true",
    )
    served = spool_serve_logged(log, env=env)
    try:
        with locked_jobs(url):
            threading.Event().wait(2.0)
            served.proc.send_signal(signal.SIGTERM)
            try:
                code = served.proc.wait(STOP_BOUND)
            except subprocess.TimeoutExpired:
                pytest.fail(f"spool serve did not stop within {STOP_BOUND}s:\n{log.read_text()}")
    finally:
        stop(served.proc)
    text = log.read_text(errors="replace")
    assert code == 0, text
    assert text.rstrip().endswith("spool: stopped"), text
    assert "Traceback" not in text, text


# -- DynamoDB: the endpoint stalls (moto_server stopped with SIGSTOP) --

DYNAMO_BOUND = 70.0  # generous: the old stop took 120 s (5 tries of a 20 s read timeout)


def test_a_worker_stopped_while_dynamodb_stalls_is_not_held_by_retries(tmp_path: Path) -> None:
    with moto_server(tmp_path / "moto.log") as moto:
        url = f"dynamodb://jobs?queue=jobs&bucket=jobs-bucket&endpoint={moto.endpoint}&create=1"
        with spool_worker(url, tmp_path) as (proc, log):
            until(lambda: "spool worker:" in log.read_text(), "the worker starts")
            threading.Event().wait(2.0)  # its first claims and beat went through
            moto.process.send_signal(signal.SIGSTOP)
            try:
                # Three idle polls (1 s each): a claim is stalled in flight when the stop
                # comes. After 1 s alone a loaded run stopped between two polls, and
                # only the sign-off met the stall (CI at load 12).
                threading.Event().wait(3.0)
                proc.send_signal(signal.SIGTERM)
                try:
                    code = proc.wait(DYNAMO_BOUND)
                except subprocess.TimeoutExpired:
                    pytest.fail(f"no exit within {DYNAMO_BOUND}s:\n{log.read_text()}")
            finally:
                moto.process.send_signal(signal.SIGCONT)
        text = log.read_text(errors="replace")
    assert code == 0, text
    assert "while the worker stops" in text, text
    assert "Traceback" not in text, text


def test_a_stopped_worker_leaves_the_store_as_it_found_it(tmp_path: Path) -> None:
    """The hurry is the stop's alone: a store that outlives its worker (spool serve's,
    shared by the next runtime; a test's) gets its usual deadlines back, and a worker
    replaced rather than stopped (events.worker_for) does not hurry it at all."""
    store = sqlite_store(f"sqlite:///{tmp_path}/spool.db")
    try:
        worker = Worker(store, Registry(), WorkerConfig(concurrency=1, idle_poll=0.05))
        runner = threading.Thread(target=worker.run)
        runner.start()
        threading.Event().wait(0.3)
        worker.stop()
        runner.join(30)
        assert not runner.is_alive()
        assert store._hurry is None
        # A stop whose hurry lands after run() gave the deadlines back (a relay thread
        # descheduled between setting the flag and hurrying, as a loaded run once was):
        # the store stays as run() left it.
        worker.stop()
        assert store._hurry is None
        Worker(store, Registry(), WorkerConfig(concurrency=1)).stop(hurry=False)
        assert store._hurry is None
    finally:
        store.close()

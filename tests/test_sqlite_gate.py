"""The SQLite write gate between processes, and checkpoints beside the writers.

Another process holds the gate through a small helper (a flock on `<db>.writer`,
exactly what a Spool writer in another process holds during its transaction), so
each test decides who holds it and when, without timing a real worker.
"""

from __future__ import annotations

import fcntl
import os
import signal
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from chalicelib.clock import FakeClock
from chalicelib.errors import StoreUnavailable
from chalicelib.models import NewJob
from chalicelib.storage import sqlite_checkpoint, sqlite_gate
from chalicelib.storage.sqlite import SQLiteStore
from chalicelib.storage.sqlite_gate import GateTimeout, WriteGate
from tests import factories

# Holds an exclusive flock on argv[1] (or a shared one with "shared"), says so, and
# keeps it until stdin closes or a line arrives.
HOLDER = """
import fcntl, os, sys
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o600)
fcntl.flock(fd, fcntl.LOCK_SH if sys.argv[2:] == ["shared"] else fcntl.LOCK_EX)
print("held", flush=True)
sys.stdin.readline()
"""


class Holder:
    def __init__(self, path: str, shared: bool = False) -> None:
        args = [sys.executable, "-c", HOLDER, path] + (["shared"] if shared else [])
        self.proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        assert self.proc.stdout.readline().strip() == "held"

    def release(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()
        assert self.proc.wait(timeout=30) == 0

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.kill()


def new_job() -> NewJob:
    return factories.new_job(FakeClock())


@pytest.fixture
def db_path(tmp_path: Path) -> str:
    return str(tmp_path / "spool.db")


@pytest.fixture
def store(db_path: str) -> Iterator[SQLiteStore]:
    opened = SQLiteStore(db_path)
    yield opened
    opened.close()


def _add_in_thread(store: SQLiteStore) -> tuple[threading.Thread, list[object]]:
    outcome: list[object] = []

    def run() -> None:
        try:
            outcome.append(store.add([new_job()])[0].job.id)
        except Exception as exc:  # reported to the test
            outcome.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, outcome


def test_a_write_waits_while_another_process_holds_the_gate(
    store: SQLiteStore, db_path: str
) -> None:
    holder = Holder(db_path + ".writer")
    try:
        thread, outcome = _add_in_thread(store)
        thread.join(0.5)
        assert thread.is_alive() and outcome == [], "wrote while another process held the gate"
        holder.release()
        thread.join(30)
        assert len(outcome) == 1 and isinstance(outcome[0], str)
        assert store.get(outcome[0]) is not None
    finally:
        holder.stop()


def test_a_gate_held_too_long_is_503_and_nothing_half_written(
    store: SQLiteStore, db_path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite_gate, "PATIENCE", 0.3)
    holder = Holder(db_path + ".writer")
    try:
        job = new_job()
        with pytest.raises(StoreUnavailable, match="locked"):
            store.add([job])
        assert store.get(job.id) is None
    finally:
        holder.stop()
    # The in-process lock was let go too: the next write goes through.
    assert store.add([job])[0].created
    assert store.get(job.id) is not None


def test_a_writer_outside_the_gate_holds_a_write_no_longer_than_its_patience(
    store: SQLiteStore, db_path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Another program (not Spool: no gate) holds SQLite's writer. BEGIN's wait in
    # SQLite's busy handler is part of the same patience as the lock and the gate:
    # it used to be a whole busy_timeout (10 s) more, whatever had been waited.
    monkeypatch.setattr(sqlite_gate, "PATIENCE", 0.3)
    other = sqlite3.connect(db_path, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        thread, outcome = _add_in_thread(store)
        thread.join(5)  # liveness: 0.3 s of patience against a 10 s busy_timeout
        assert not thread.is_alive(), "the write waited out SQLite's whole busy_timeout"
        assert len(outcome) == 1 and isinstance(outcome[0], StoreUnavailable)
    finally:
        other.execute("ROLLBACK")
        other.close()
    # A write with its patience cut short (0.3 s of 10) puts the connection's own
    # busy_timeout back after BEGIN: later writes wait as long as before.
    assert store.add([new_job()])[0].created
    assert store._db().execute("PRAGMA busy_timeout").fetchone()[0] == sqlite_gate.BUSY_TIMEOUT_MS


def test_a_writer_killed_holding_the_gate_leaves_it_open(store: SQLiteStore, db_path: str) -> None:
    holder = Holder(db_path + ".writer")
    thread, outcome = _add_in_thread(store)
    thread.join(0.3)
    assert thread.is_alive()
    holder.kill()  # kill -9: the kernel drops its flock
    thread.join(30)
    assert len(outcome) == 1 and isinstance(outcome[0], str)


# A forked child with its own pid, and one whose pid is its parent's: a pid given again
# (a grandchild given the pid of a grandparent that has exited since). The child of a
# fork is told by the fork, not by its pid (worker_id.this_process).
CHILD_PIDS = pytest.mark.parametrize("same_pid", [False, True], ids=["own-pid", "pid-given-again"])


@CHILD_PIDS
def test_a_forked_child_takes_its_own_turn(db_path: str, same_pid: bool) -> None:
    """After a fork the child must not share the parent's open file description,
    or flock would count parent and child as one owner and let both write."""
    gate = WriteGate(db_path)
    gate.acquire()
    parent = os.getpid()
    try:
        pid = os.fork()
        if pid == 0:  # the child: the parent holds the gate, so this must time out
            code = 0
            if same_pid:
                os.getpid = lambda: parent
            try:
                gate.acquire(patience=0.3)
                code = 1
            except GateTimeout:
                code = 0
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0, "the child took a gate its parent held"
    finally:
        gate.release()
        gate.close()


def test_a_writer_arriving_while_another_waits_lets_the_waiter_go_first(
    db_path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The worker's threads write back to back; an API process waiting for its turn
    must get the gate when the worker lets go, not after the worker's next write."""
    monkeypatch.setattr(sqlite_gate, "COURTESY", 3.0)  # wide enough for any load
    gate = WriteGate(db_path)
    order = Path(db_path + ".order")
    waiter_code = f"""
import sys
sys.path.insert(0, {str(Path(__file__).resolve().parent.parent)!r})
from pathlib import Path
from chalicelib.storage.sqlite_gate import WriteGate
gate = WriteGate({db_path!r})
print("waiting", flush=True)
gate.acquire()
with open({str(order)!r}, "a") as f:
    f.write("waiter\\n")
gate.release()
"""
    gate.acquire()
    waiter = subprocess.Popen(
        [sys.executable, "-c", waiter_code], stdout=subprocess.PIPE, text=True
    )
    try:
        assert waiter.stdout is not None and waiter.stdout.readline().strip() == "waiting"
        # Wait until the waiter shows itself (its shared flock on <db>.waiting).
        for _ in range(3000):
            if gate._others_waiting():
                break
            threading.Event().wait(0.01)
        else:
            pytest.fail("the waiter never announced itself")
        gate.release()
        gate.acquire()  # arrives while the waiter waits: steps aside first
        with open(order, "a") as f:
            f.write("newcomer\n")
        gate.release()
        assert waiter.wait(timeout=30) == 0
        assert order.read_text().split() == ["waiter", "newcomer"]
    finally:
        if waiter.poll() is None:
            waiter.kill()
        gate.close()


class _Clock:
    """time for sqlite_gate: sleeping advances a fake clock and lets `on_sleep` act."""

    def __init__(self, on_sleep: Callable[[float], None]) -> None:
        self.now = 0.0
        self.on_sleep = on_sleep

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds
        self.on_sleep(self.now)


def _lock(path: str, how: int) -> int:
    """A descriptor of its own on path holding flock `how`: another owner, as another
    process's would be."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, how)
    return fd


def test_a_newcomer_waits_for_a_late_waiter_to_have_its_turn(
    db_path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The worker arrives again just after its write, while an API process waits for the
    gate; the API process's wake-up comes late (descheduled on a busy machine). The
    worker must not take the turn back meanwhile: the waiter goes first."""
    order: list[str] = []
    waiting = _lock(db_path + ".waiting", fcntl.LOCK_SH)  # someone waits for the gate
    writer = os.open(db_path + ".writer", os.O_RDWR | os.O_CREAT, 0o600)

    def waiter_wakes(now: float) -> None:
        if now >= 0.001 and not order:  # a millisecond late: its turn now
            fcntl.flock(writer, fcntl.LOCK_EX | fcntl.LOCK_NB)
            fcntl.flock(waiting, fcntl.LOCK_UN)
            order.append("waiter")
            fcntl.flock(writer, fcntl.LOCK_UN)

    monkeypatch.setattr(sqlite_gate, "time", _Clock(waiter_wakes))
    gate = WriteGate(db_path)
    try:
        gate.acquire()
        order.append("newcomer")
        gate.release()
        assert order == ["waiter", "newcomer"]
    finally:
        gate.close()
        os.close(waiting)
        os.close(writer)


def test_a_waiter_that_never_comes_holds_a_newcomer_back_for_the_courtesy_only(
    db_path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A waiter stopped while waiting (SIGSTOP, or a process that is never scheduled)
    must not stall the writers arriving after it: they go after COURTESY."""
    waiting = _lock(db_path + ".waiting", fcntl.LOCK_SH)
    clock = _Clock(lambda now: None)
    monkeypatch.setattr(sqlite_gate, "time", clock)
    gate = WriteGate(db_path)
    try:
        gate.acquire()
        assert not _exclusive_free(db_path + ".writer")  # it holds the gate
        assert sqlite_gate.COURTESY <= clock.now < sqlite_gate.COURTESY + 0.001
        gate.release()
    finally:
        gate.close()
        os.close(waiting)


def _exclusive_free(path: str) -> bool:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    finally:
        os.close(fd)
    return True


def test_no_one_waiting_is_told_apart_from_someone_waiting(db_path: str) -> None:
    gate = WriteGate(db_path)
    gate.acquire()
    gate.release()
    assert not gate._others_waiting()
    holder = Holder(db_path + ".waiting", shared=True)
    try:
        assert gate._others_waiting()
    finally:
        holder.stop()
        gate.close()


def test_the_gate_files_are_private(store: SQLiteStore, db_path: str) -> None:
    store.add([new_job()])
    for suffix in (".writer", ".waiting"):
        assert os.stat(db_path + suffix).st_mode & 0o777 == 0o600


def test_the_wal_backlog_read_from_the_index_matches_sqlite(
    store: SQLiteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite_checkpoint, "CHECKPOINT_PAGES", 10**9)  # none of ours
    for _ in range(20):
        store.add([new_job() for _ in range(50)])
    checkpointer = store._checkpointer
    assert checkpointer is not None
    pending = checkpointer.backlog()
    assert pending > 20  # 20 commits wrote at least a frame each
    busy, frames, copied = store._db().execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
    assert (busy, frames, copied) == (0, pending, pending)
    assert checkpointer.backlog() == 0


def test_writes_past_the_mark_start_a_checkpoint_beside_them(
    store: SQLiteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite_checkpoint, "CHECKPOINT_PAGES", 40)
    checkpointer = store._checkpointer
    assert checkpointer is not None
    started: list[str] = []
    real_run = checkpointer._run

    def counted_run() -> None:
        started.append(threading.current_thread().name)
        real_run()

    monkeypatch.setattr(checkpointer, "_run", counted_run)
    for _ in range(30):
        store.add([new_job() for _ in range(20)])
    with checkpointer._running:  # the last one has finished
        pass
    # Writes that landed while a slow checkpoint ran (a loaded machine) start none of
    # their own: the next write past the mark does, once that one is done.
    store.add([new_job()])
    with checkpointer._running:
        pass
    assert started and set(started) == {"spool-checkpoint"}
    # The WAL was copied back as it grew: what is left is less than one mark plus a write.
    assert checkpointer.backlog() < 40 + 60


def test_a_file_system_without_flock_falls_back_to_sqlites_lock(
    store: SQLiteStore, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import errno

    def no_locks(fd: int, operation: int) -> None:
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr("chalicelib.storage.sqlite_gate.fcntl.flock", no_locks)
    jobs = [new_job(), new_job()]
    for job in jobs:
        assert store.add([job])[0].created
    assert all(store.get(job.id) is not None for job in jobs)
    assert "no write gate" in caplog.text


@CHILD_PIDS
def test_a_forked_child_checkpoints_although_the_parent_was_checkpointing(
    store: SQLiteStore, monkeypatch: pytest.MonkeyPatch, same_pid: bool
) -> None:
    checkpointer = store._checkpointer
    assert checkpointer is not None
    store.add([new_job()])
    checkpointer._running.acquire()  # the parent's checkpoint thread is mid-way
    parent = os.getpid()
    try:
        pid = os.fork()
        if pid == 0:
            code = 1
            if same_pid:
                os.getpid = lambda: parent
            try:
                checkpointer.run_now()  # would wait forever on the inherited lock
                checkpointer.close()
                code = 0 if checkpointer.backlog() == 0 else 2
            finally:
                os._exit(code)
        for _ in range(3000):  # 30 s, then the child is stuck on the inherited lock
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            threading.Event().wait(0.01)
        else:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            pytest.fail("the forked child waited on its parent's checkpoint lock")
        assert os.waitstatus_to_exitcode(status) == 0
    finally:
        checkpointer._running.release()


def test_a_checkpoint_that_cannot_start_does_not_fail_the_write(
    store: SQLiteStore, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(sqlite_checkpoint, "CHECKPOINT_PAGES", 1)

    class NoThreads:
        def __init__(self, *args: object, **kwargs: object) -> None: ...

        def start(self) -> None:
            raise RuntimeError("can't start new thread")

    monkeypatch.setattr(sqlite_checkpoint, "_Thread", NoThreads)
    jobs = [new_job() for _ in range(3)]
    for job in jobs:  # the write committed, so its caller hears so
        assert store.add([job])[0].created
    assert all(store.get(job.id) is not None for job in jobs)
    assert "checkpoint not started" in caplog.text
    checkpointer = store._checkpointer
    assert checkpointer is not None
    assert checkpointer._running.acquire(blocking=False)  # let go after each failure
    checkpointer._running.release()

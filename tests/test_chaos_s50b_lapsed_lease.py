"""A handler whose lease lapses while the store cannot be reached is told at the lapse.

Found from outside: two `spool worker` processes on one SQLite file, a type under
`concurrency=1` whose handler stops on `ctx.cancelled`, SPOOL_LEASE_SECONDS=2, and a
third process holding the file's write lock for 14 s. The running handler's lease
lapsed 2 s into the lock, but it was told only once the lock was let go and its
worker's renewal was refused: it ran on for 12 s past its lease, and the other
worker, whose claim won the write lock first, started the job beside it (two running
under concurrency 1). The worker could not ask the store, but it knew when the lease
ran out: that is all a refused renewal would have said (a renewal is refused exactly
when the lease has lapsed). Now `ctx.cancelled` reads as set from the lapse on,
store or no store.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from chalicelib.errors import StoreUnavailable
from chalicelib.handlers import JobContext, Registry
from chalicelib.storage.memory import MemoryStore
from chalicelib.storage.sqlite import SQLiteStore
from chalicelib.worker import Worker, WorkerConfig
from tests.factories import new_job
from tests.procs import ROOT, guarded_env

LEASE = 1.0
# The longest the third process holds the write lock: 2.5 of the workers' 2 s leases.
LOCK_HELD = 5.0


class Unreachable(MemoryStore):
    """A memory store that stops answering lease renewals and finishes when told to."""

    def __init__(self) -> None:
        super().__init__()
        self.down = threading.Event()

    def extend_leases(self, leases: Sequence[tuple[str, str]], lease_seconds: float) -> Any:
        if self.down.is_set():
            raise StoreUnavailable("the store is down (test)")
        return super().extend_leases(leases, lease_seconds)

    def claim(self, *args: Any, **kwargs: Any) -> Any:
        if self.down.is_set():
            raise StoreUnavailable("the store is down (test)")
        return super().claim(*args, **kwargs)

    def finish(self, completions: Sequence[Any]) -> list[bool]:
        if self.down.is_set():
            raise StoreUnavailable("the store is down (test)")
        return super().finish(completions)


@pytest.mark.timeout(60)
def test_a_lease_that_lapses_in_an_outage_sets_ctx_cancelled_at_the_lapse() -> None:
    store = Unreachable()
    reg = Registry()
    told: dict[str, float] = {}
    began = threading.Event()

    @reg.handler("t.wait", timeout=30)
    def wait(payload: dict[str, object], ctx: JobContext) -> None:
        store.down.set()
        began.set()
        start = time.monotonic()
        if ctx.cancelled.wait(10):
            told["after"] = time.monotonic() - start

    [added] = store.add([new_job(store.clock, "t.wait")])
    worker = Worker(store, reg, WorkerConfig(concurrency=1, lease_seconds=LEASE))
    runner = threading.Thread(target=worker.run, name="test-worker", daemon=True)
    runner.start()
    try:
        assert began.wait(10)
        deadline = time.monotonic() + 15
        while "after" not in told and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        store.down.clear()
        worker.stop()
        runner.join(30)
    assert "after" in told, "the handler was never told its lease had lapsed"
    assert told["after"] <= LEASE + 0.5
    assert store.get(added.job.id) is not None


def test_a_context_without_a_lease_is_cancelled_only_when_set() -> None:
    """A JobContext made by hand (tests, tools) has no lease: only set() cancels it."""
    ctx = JobContext(new_job_stored(), time.monotonic() + 5)
    assert not ctx.cancelled.is_set()
    assert not ctx.cancelled.wait(0.01)
    ctx.cancelled.set()
    assert ctx.cancelled.is_set() and ctx.cancelled.wait(0)


def new_job_stored() -> Any:
    store = MemoryStore()
    [result] = store.add([new_job(store.clock, "t.any")])
    return result.job


HANDLERS = """
import os, time
from chalicelib.handlers import JobContext, handler

def _note(what):
    path = os.path.join(os.environ["S50B_LOG"], f"{os.getpid()}.log")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.write(fd, f"{what} {time.time():.6f}\\n".encode())
    os.close(fd)

@handler("s50b.one", concurrency=1, max_attempts=5, timeout=60)
def one(payload: dict, ctx: JobContext) -> dict:
    _note("start")
    end = time.monotonic() + 20
    while time.monotonic() < end:
        if ctx.cancelled.wait(0.02):
            _note("cancel")
            return {"cancelled": True}
    _note("end")
    return {"cancelled": False}
"""


def _events(log_dir: Path) -> list[tuple[float, str, str]]:
    found = []
    for log in log_dir.iterdir():
        for line in log.read_text().splitlines():
            what, at = line.split()
            found.append((float(at), log.stem, what))
    return sorted(found)


@pytest.mark.timeout(120)
def test_a_write_lock_held_past_the_lease_tells_the_handler_before_another_worker_starts(
    tmp_path: Path,
) -> None:
    (tmp_path / "s50b_handlers.py").write_text(HANDLERS)
    log_dir = tmp_path / "log"
    log_dir.mkdir()
    db = tmp_path / "spool.db"
    store = SQLiteStore(str(db))
    try:
        store.add([new_job(store.clock, "s50b.one")])
    finally:
        store.close()
    env = guarded_env(
        SPOOL_STORE_URL=f"sqlite:///{db}",
        SPOOL_HANDLERS="s50b_handlers",
        SPOOL_LEASE_SECONDS="2",
        S50B_LOG=str(log_dir),
    )
    # After the network guard's entry (guarded_env put it first): the handler module.
    env["PYTHONPATH"] = os.pathsep.join([env.get("PYTHONPATH", ""), str(tmp_path), str(ROOT)])
    workers = [
        subprocess.Popen(
            [sys.executable, "-m", "local.cli", "worker", "--concurrency", "2"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(2)
    ]
    try:
        deadline = time.monotonic() + 60
        while not _events(log_dir):
            assert time.monotonic() < deadline, "no worker started the job"
            time.sleep(0.02)
        locker = sqlite3.connect(str(db), isolation_level=None, timeout=30)
        locker.execute("BEGIN IMMEDIATE")
        try:
            # Held until the handler says it was told (its lease lapses 2 s in), for at
            # most 2.5 leases: a handler told only once the lock is let go (the bug)
            # says nothing while it is held, and its "cancel" comes after `released`.
            held = time.monotonic() + LOCK_HELD
            while time.monotonic() < held and not any(e[2] == "cancel" for e in _events(log_dir)):
                time.sleep(0.02)
        finally:
            released = time.time()
            locker.execute("COMMIT")
            locker.close()
        while len([e for e in _events(log_dir) if e[2] == "start"]) < 2:
            assert time.monotonic() < deadline, "the job never ran again"
            time.sleep(0.02)
    finally:
        # Killed, not stopped: nothing here checks a stop, and a SIGTERM'd worker
        # finishes the job's second attempt (20 s): stop() waited its 15 s, then killed.
        for w in workers:
            w.kill()
        for w in workers:
            w.wait(10)
    events = _events(log_dir)
    first_pid = events[0][1]
    told = [at for at, pid, what in events if pid == first_pid and what == "cancel"]
    assert told, events
    assert told[0] < released, "the handler heard of its lapsed lease only after the lock"
    running = 0
    for _, _, what in events:
        running += 1 if what == "start" else -1
        assert running <= 1, f"two attempts ran at once under concurrency 1: {events}"

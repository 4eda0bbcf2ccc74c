"""A refused start removes only a SQLite store that is its own, and unused.

local/fresh_store.py removed the file at the path it had seen missing when the
command began. Another process starting in the same folder in the same instant
(two `spool serve` on one port: one binds, one is refused) could have made the
store, or opened it, in between: the refused one removed a store the other was
serving. Each case here is staged in order (no timing): the file made by someone
else before the guard, opened by another process, holding a job, or replaced.
"""

from __future__ import annotations

import contextlib
import sqlite3
import subprocess
import sys
from pathlib import Path

from chalicelib.clock import FakeClock
from chalicelib.storage.sqlite import SQLiteStore
from local import fresh_store
from tests.factories import new_job
from tests.procs import ROOT, guarded_env, stop

HOLDER = """
import sys
from chalicelib.storage.sqlite import SQLiteStore
store = SQLiteStore(sys.argv[1])
store.get("j_probe")  # a read: the connection is open and in use
print("open", flush=True)
sys.stdin.readline()  # held until the test says
print(store.get("j_probe") is None, flush=True)
store.close()
"""


def store_path(tmp_path: Path) -> Path:
    return tmp_path / "fresh" / "spool.db"


def open_and_close(path: Path, jobs: int = 0) -> None:
    store = SQLiteStore(str(path), FakeClock())
    try:
        if jobs:
            store.add([new_job(FakeClock()) for _ in range(jobs)])
    finally:
        store.close()


def test_the_store_a_refused_start_made_is_removed(tmp_path: Path) -> None:
    path = store_path(tmp_path)
    fresh = fresh_store.guard(str(path))
    open_and_close(path)
    fresh.remove()
    assert not path.parent.exists()


def test_a_store_another_process_made_before_the_guard_is_kept(tmp_path: Path) -> None:
    """The command saw no file; another start made it before this one opened it."""
    path = store_path(tmp_path)
    open_and_close(path)  # the other process, first
    fresh = fresh_store.guard(str(path))  # was: trusted the earlier look, and removed it
    open_and_close(path)
    fresh.remove()
    assert path.exists()


def test_a_store_another_process_has_open_is_kept(tmp_path: Path) -> None:
    path = store_path(tmp_path)
    fresh = fresh_store.guard(str(path))
    open_and_close(path)
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(path)],
        cwd=ROOT, env=guarded_env(PYTHONPATH=str(ROOT)),
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdin is not None
        assert holder.stdout.readline().strip() == "open"
        fresh.remove()  # the other process is serving it: nothing goes
        assert path.exists()
        holder.stdin.write("\n")
        holder.stdin.flush()
        assert holder.stdout.readline().strip() == "True"  # its store still works
        assert holder.wait(timeout=30) == 0
    finally:
        stop(holder)
    assert path.exists()


def test_a_store_that_holds_jobs_is_kept(tmp_path: Path) -> None:
    """Another process opened it, stored a job and closed it again before the removal."""
    path = store_path(tmp_path)
    fresh = fresh_store.guard(str(path))
    open_and_close(path, jobs=1)
    fresh.remove()
    with contextlib.closing(sqlite3.connect(path)) as db:
        assert db.execute("SELECT count(*) FROM jobs").fetchone() == (1,)


def test_a_store_replaced_at_the_path_is_kept(tmp_path: Path) -> None:
    path = store_path(tmp_path)
    fresh = fresh_store.guard(str(path))
    # Moved aside (still linked, its inode cannot be reused for the new file; an empty
    # file nobody has open that reuses it is removed, which loses nothing).
    path.rename(tmp_path / "moved.db")
    open_and_close(path)  # someone else's file now has the name
    fresh.remove()
    assert path.exists()

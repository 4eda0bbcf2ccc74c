"""The SQLite store's memory stays bounded as its file grows.

Each thread has a connection of its own, and each connection keeps a page cache:
a server with 16 HTTP threads (and a worker's pool) reading a file larger than
that cache held one copy of it per thread. With 32 MiB each, a `spool serve`
whose file had grown to 66 MB went from 65 MB to 670 MB of RSS under reads
(/jobs, the dashboard) and stayed there. Measured here with SQLite's own count
of the memory it holds (sqlite3_status64), so no RSS noise.
"""

from __future__ import annotations

import ctypes
import threading
from pathlib import Path

import pytest

from chalicelib.clock import FakeClock
from chalicelib.models import JobQuery
from chalicelib.storage.sqlite import SQLiteStore
from tests.factories import new_job

MIB = 1024 * 1024
THREADS = 6
SQLITE_STATUS_MEMORY_USED = 0


def sqlite_memory() -> int:
    """Bytes the SQLite library holds now, all connections of this process."""
    import _sqlite3

    lib = ctypes.CDLL(_sqlite3.__file__)
    current, highest = ctypes.c_int64(), ctypes.c_int64()
    if lib.sqlite3_status64(
        SQLITE_STATUS_MEMORY_USED, ctypes.byref(current), ctypes.byref(highest), 0
    ):
        pytest.skip("sqlite3_status64 is not available")
    return current.value


def test_many_threads_reading_a_large_file_do_not_each_cache_it(tmp_path: Path) -> None:
    clock = FakeClock()
    store = SQLiteStore(str(tmp_path / "spool.db"), clock)
    try:
        pad = "x" * 8000
        for _ in range(3):  # about 12 MB of jobs, more than a connection may cache
            store.add([new_job(clock, payload={"pad": pad, "n": n}) for n in range(500)])
        size = (tmp_path / "spool.db").stat().st_size + (tmp_path / "spool.db-wal").stat().st_size
        assert size > 10 * MIB
        before = sqlite_memory()
        errors: list[BaseException] = []
        started = threading.Barrier(THREADS, timeout=30)
        done = threading.Barrier(THREADS, timeout=30)
        measured = threading.Event()  # every thread's connection stays open until then

        def read_all() -> None:
            try:
                started.wait()
                cursor = None
                while True:
                    page = store.list_jobs(JobQuery(limit=1000, cursor=cursor))
                    cursor = page.next_cursor
                    if cursor is None:
                        break
            except BaseException as exc:
                errors.append(exc)
            finally:
                done.wait()

        def read_and_stay() -> None:
            read_all()
            measured.wait(30)

        threads = [threading.Thread(target=read_and_stay) for _ in range(THREADS - 1)]
        for t in threads:
            t.start()
        read_all()
        held = sqlite_memory() - before
        measured.set()
        for t in threads:
            t.join(30)
        assert not errors
        # Each thread's connection caches at most a few MiB, not the whole file.
        assert held < THREADS * 4 * MIB, f"{held / MIB:.1f} MiB held by {THREADS} readers"
    finally:
        store.close()

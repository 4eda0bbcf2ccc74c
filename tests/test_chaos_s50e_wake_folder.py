"""The SQLite store's wake-up folder (`<db>.wake`, chalicelib/storage/notify.py)
removed while Spool runs (by hand, or a cleaner of old files): every waiting worker
lost its socket, so no wake-up reached it again, and nothing said so. `spool
serve`'s built-in worker then ran each job on its half-second fallback poll
instead of at once (a job's latency went from ~15 ms to ~570 ms), a `spool worker`
on its one-second poll, until each was restarted.

Now a waiter whose wait ends without a wake-up looks for its socket's file; gone,
it makes the folder again (not its parents: the database's own folder gone is
the store's to report) and binds a new socket, so wake-ups reach it again.
Real sockets and a real `spool serve`, bounded waits.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from pathlib import Path

import pytest
import requests

from chalicelib.storage.notify import SocketDirNotifier
from tests.procs import guarded_env, spool_serve, stop

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="Unix sockets")

KEY = "wake-key-0123456789"


def test_a_waiter_whose_folder_was_removed_is_woken_again(tmp_path: Path) -> None:
    folder = str(tmp_path / "spool.db.wake")
    waiter = SocketDirNotifier(folder)
    sender = SocketDirNotifier(folder)
    try:
        assert waiter.wait(0) is False  # subscribed: its socket is in the folder
        shutil.rmtree(folder)
        assert waiter.wait(0.05) is False  # nothing came: it finds its socket gone
        sender.notify()
        started = time.monotonic()
        assert waiter.wait(10) is True
        assert time.monotonic() - started < 5  # the wake-up, not the timeout
    finally:
        waiter.close()
        sender.close()


def test_the_folder_is_made_again_but_not_its_parents(tmp_path: Path) -> None:
    """The database's folder gone is no reason to make it anew (an empty folder where
    the store was): the wake-ups wait for it, on the fallback poll."""
    data = tmp_path / "data"
    data.mkdir()
    folder = str(data / "spool.db.wake")
    waiter = SocketDirNotifier(folder)
    try:
        waiter.wait(0)
        shutil.rmtree(data)
        assert waiter.wait(0.05) is False
        assert waiter.wait(0.05) is False
        assert not data.exists()
    finally:
        waiter.close()


def test_a_file_where_the_folder_was_never_fails_a_wait(tmp_path: Path) -> None:
    """A wait that raised would be taken for a store outage by the built-in worker."""
    folder = tmp_path / "spool.db.wake"
    waiter = SocketDirNotifier(str(folder))
    try:
        waiter.wait(0)
        shutil.rmtree(folder)
        folder.write_text("not a folder")
        for _ in range(3):
            assert waiter.wait(0.01) is False
        waiter.interrupt()
        assert waiter.wait(5) is True  # Worker.stop still wakes it
    finally:
        waiter.close()


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_spool_serve_s_worker_binds_again_in_a_removed_folder(tmp_path: Path) -> None:
    """The built-in worker's socket (named by the server's pid) is back in the folder
    soon after it was removed, and a job still runs."""
    db = tmp_path / "spool.db"
    env = guarded_env(
        SPOOL_STORE_URL=f"sqlite:///{db}",
        SPOOL_API_KEYS=f"{KEY}=acme",
        SPOOL_DEMO_HANDLERS="true",
    )
    served = spool_serve("--threads", "4", env=env)
    folder = Path(f"{db}.wake")
    pid = served.proc.pid

    def bound() -> bool:
        with_pid = f"{pid}-"
        return folder.is_dir() and any(n.startswith(with_pid) for n in os.listdir(folder))

    try:
        deadline = time.monotonic() + 30
        while not bound():
            assert time.monotonic() < deadline, "the worker never bound its socket"
            time.sleep(0.05)
        shutil.rmtree(folder)
        deadline = time.monotonic() + 15
        while not bound():
            assert time.monotonic() < deadline, "the worker never bound again"
            assert served.proc.poll() is None
            time.sleep(0.05)
        headers = {"X-API-Key": KEY}
        echo = {"type": "echo", "payload": {}}
        job = requests.post(f"{served.url}/enqueue", json=echo, headers=headers, timeout=10).json()
        view = requests.get(f"{served.url}/status/{job['id']}?wait=20", headers=headers, timeout=30)
        assert view.json()["state"] == "succeeded"
    finally:
        stop(served.proc)
    assert served.proc.returncode == 0

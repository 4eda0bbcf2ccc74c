"""A SQLite file in a deep folder: its wake-up sockets' paths outgrow a Unix address.

Workers sharing a SQLite file wait on Unix datagram sockets in `<db>.wake/`, and a
socket's path must fit in sun_path (107 bytes on Linux). A deeper file (a project in
a long home path, a CI workspace, pytest's tmp_path) made bind() raise "AF_UNIX path
too long": `spool serve`'s built-in worker died with a traceback at its start while
the server went on answering 201 for jobs nothing would run, `spool worker` lost its
wake-up thread, and every notify failed silently. The folder is now reached through
a descriptor of it (/proc/self/fd/N/...) where its own path is too long.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest
import requests

import app as spool_app
from chalicelib.models import JobState
from chalicelib.runtime import Runtime
from chalicelib.storage.notify import SUN_PATH, SocketDirNotifier
from local.emulator import Emulator
from tests.procs import guarded_env, spool_serve, stop
from tests.test_events import add, state

KEY = "chaos-wake-key-0123456789"


def _deep(tmp_path: Path) -> Path:
    """A folder whose sockets' paths (<folder>/<pid>-<hex>.sock) cannot be addresses."""
    folder = tmp_path / ("d" * 60) / ("e" * 60)
    folder.mkdir(parents=True)
    assert len(str(folder / "1234567-0123abcd.sock")) >= SUN_PATH
    return folder


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc/self/fd is Linux's")
def test_waiters_in_a_deep_folder_are_woken_by_other_notifiers(tmp_path: Path) -> None:
    wake = _deep(tmp_path) / "spool.db.wake"
    waiter, sender = SocketDirNotifier(str(wake)), SocketDirNotifier(str(wake))
    try:
        assert waiter.wait(0) is False  # subscribes: binds its socket in the folder
        assert len(list(wake.glob("*.sock"))) == 1
        sender.notify()
        assert waiter.wait(30) is True  # returns at the wake-up, long before 30 s
        waiter.interrupt()  # Worker.stop's own wake-up reaches it too
        assert waiter.wait(30) is True
    finally:
        waiter.close()
        sender.close()
    assert list(wake.glob("*.sock")) == []  # close removed its socket


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_spool_serve_runs_jobs_on_a_sqlite_file_in_a_deep_folder(tmp_path: Path) -> None:
    """Was: the built-in worker's thread died at start ("Exception in thread
    spool-emulator ... OSError: AF_UNIX path too long"): the job stayed queued."""
    url = f"sqlite:///{_deep(tmp_path)}/spool.db"
    env = guarded_env(SPOOL_STORE_URL=url, SPOOL_API_KEYS=f"{KEY}=deep", SPOOL_DEMO_HANDLERS="1")
    served = spool_serve(env=env)
    try:
        headers = {"X-API-Key": KEY}
        reply = requests.post(
            f"{served.url}/enqueue", json={"type": "echo"}, headers=headers, timeout=10
        )
        assert reply.status_code == 201, reply.text
        status = f"{served.url}/status/{reply.json()['id']}"
        deadline = time.monotonic() + 60
        state = ""
        while time.monotonic() < deadline:
            state = requests.get(status, headers=headers, timeout=10).json()["state"]
            if state == "succeeded":
                break
            time.sleep(0.05)
        assert state == "succeeded"
    finally:
        stop(served.proc)
    assert served.proc.stderr is not None
    errors = served.proc.stderr.read()
    assert "Traceback" not in errors, errors


def test_without_a_short_name_for_the_folder_a_waiter_still_waits_and_stops(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """No /proc (macOS, the BSDs): no socket in the folder; the waiter waits out its
    timeout (workers poll), Worker.stop's interrupt still wakes it, and it says why."""
    monkeypatch.setattr("chalicelib.storage.notify.PROC_FD", str(tmp_path / "no-proc"))
    wake = _deep(tmp_path) / "spool.db.wake"
    waiter, sender = SocketDirNotifier(str(wake)), SocketDirNotifier(str(wake))
    try:
        assert waiter.wait(0) is False
        assert list(wake.glob("*.sock")) == []
        sender.notify()  # nothing to reach, and no error
        assert waiter.wait(0) is False
        waiter.interrupt()
        assert waiter.wait(30) is True
    finally:
        waiter.close()
        sender.close()
    assert "too deep for a Unix socket's address" in caplog.text


def test_the_built_in_worker_lives_on_when_its_wake_ups_cannot_start(
    rt: Runtime, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Whatever else refuses the wake-up socket (no descriptors left, the folder taken
    away), the emulator is `spool serve`'s only worker: it polls instead of ending."""
    notifier = rt.store.notifier  # type: ignore[attr-defined]

    def refused(timeout: float) -> bool:
        raise OSError(24, "Too many open files")

    monkeypatch.setattr(notifier, "wait", refused)
    emulator = Emulator(spool_app.app, rt)
    emulator.start()
    try:
        job_id = add(rt)
        deadline = time.monotonic() + 30
        while state(rt, job_id) != JobState.SUCCEEDED and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        emulator.stop()
    assert state(rt, job_id) == JobState.SUCCEEDED
    assert "the built-in worker gets no wake-ups" in caplog.text


def test_spool_worker_lives_on_without_wake_ups_and_says_so(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """`spool worker`'s wake thread (Worker._bridge) whose first wait is refused: it
    ended with a traceback on stderr; it says once that the worker polls, and the
    worker polls."""
    import threading

    from chalicelib.clock import SystemClock
    from chalicelib.handlers import Registry
    from chalicelib.storage.memory import MemoryStore
    from chalicelib.worker import Worker, WorkerConfig
    from tests.factories import new_job

    escaped: list[BaseException | None] = []
    monkeypatch.setattr(threading, "excepthook", lambda args: escaped.append(args.exc_value))
    store = MemoryStore(SystemClock())

    def refused(timeout: float) -> bool:
        raise OSError(24, "Too many open files")

    monkeypatch.setattr(store.notifier, "wait", refused)
    reg = Registry()
    ran = threading.Event()
    reg.handler("mark")(lambda payload: ran.set())
    worker = Worker(store, reg, WorkerConfig(concurrency=1, idle_poll=0.05))
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    try:
        store.add([new_job(store.clock, "mark")])
        assert ran.wait(30)
    finally:
        worker.stop()
        thread.join(30)
        store.close()
    assert not thread.is_alive()
    assert escaped == []
    assert "the worker gets no wake-ups" in caplog.text

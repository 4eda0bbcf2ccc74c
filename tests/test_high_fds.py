"""Descriptors numbered past 1023: a busy `spool serve` hands them to its stores.

`spool serve` raises its open-file limit to fit SPOOL_HTTP_MAX_CONNECTIONS (10,000
by default), so with a thousand keep-alive clients connected, any socket it opens
next (a Postgres pool connection, the LISTEN connection, a worker's wake-up socket)
gets a number of 1024 or more. select.select() refuses those (ValueError:
filedescriptor out of range). The pool's connection check took that for a dead
connection and threw every new one away, so a server with 1,200 idle clients
answered 503 "the database cannot be reached" to the requests that needed one while
the database was fine; the wake-up waits raised instead of waiting.

Each test here holds ~1,100 spare descriptors open while the code under test makes
its sockets, so they land past 1023.
"""

from __future__ import annotations

import contextlib
import os
import resource
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from chalicelib.clock import FakeClock
from chalicelib.storage.notify import SocketDirNotifier
from tests.factories import new_job

SPARE = 1100
WAIT = 30.0


@pytest.fixture
def high_fds() -> Iterator[None]:
    """Hold SPARE descriptors open (raising the soft limit to fit), so the next ones
    this process opens are numbered past FD_SETSIZE (1024)."""
    with open_files(SPARE + 512):
        held = [os.open(os.devnull, os.O_RDONLY) for _ in range(SPARE)]
        try:
            assert max(held) >= 1024
            yield
        finally:
            for fd in held:
                os.close(fd)


@contextlib.contextmanager
def open_files(wanted: int) -> Iterator[None]:
    """Raise this process's soft open-file limit to `wanted` (a test environment
    whose hard limit is lower fails, saying so), and put it back afterwards."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < wanted:
        pytest.fail(f"the hard open-file limit ({hard}) is below the {wanted} this test needs")
    if soft != resource.RLIM_INFINITY and soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_a_sqlite_wake_up_socket_past_1023_still_wakes(high_fds: None, tmp_path: Path) -> None:
    directory = str(tmp_path / "spool.db.wake")
    waiter, sender = SocketDirNotifier(directory), SocketDirNotifier(directory)
    try:
        assert waiter.wait(0) is False  # binds its socket, numbered past 1023
        woke: list[bool] = []
        thread = threading.Thread(target=lambda: woke.append(waiter.wait(WAIT)))
        thread.start()
        deadline = time.monotonic() + WAIT
        while thread.is_alive() and not woke and time.monotonic() < deadline:
            sender.notify()
            thread.join(0.05)
        thread.join(WAIT)
        assert woke == [True]
    finally:
        waiter.close()
        sender.close()


@pytest.mark.postgres
def test_a_postgres_store_opened_past_1023_serves_and_wakes(high_fds: None) -> None:
    from chalicelib.storage.postgres import from_url
    from tests.pg_support import fresh_schema

    with fresh_schema() as url:
        store, writer = from_url(url), from_url(url)
        try:
            # Every pool connection is new, so each checkout runs the pool's check on a
            # socket past 1023: it took those for dead and no connection was ever handed out.
            job = new_job(FakeClock(store.clock.now()))
            store.add([job])
            got = store.get(job.id)
            assert got is not None and got.id == job.id
            # The LISTEN connection is past 1023 too: wait() must wait, not raise.
            assert store.notifier.wait(0) is False
            woke: list[bool] = []
            thread = threading.Thread(target=lambda: woke.append(store.notifier.wait(WAIT)))
            thread.start()
            time.sleep(0.1)
            writer.add([new_job(FakeClock(writer.clock.now()))])
            thread.join(WAIT + 5)
            assert woke == [True]
        finally:
            store.close()
            writer.close()


@pytest.mark.postgres
@pytest.mark.slow
def test_spool_serve_on_postgres_answers_with_a_thousand_idle_clients(tmp_path: Path) -> None:
    """The symptom, end to end: 1,200 keep-alive clients sit idle on `spool serve`
    (Postgres), then 20 clients enqueue at once. Each needs a pool connection, opened
    past descriptor 1023: all were answered 503 "the database cannot be reached"."""
    import http.client
    import json
    import socket

    from tests.pg_support import fresh_schema
    from tests.procs import guarded_env, spool_serve_logged, stop

    with open_files(1200 + 512), fresh_schema() as url:
        env = guarded_env(
            SPOOL_STORE_URL=url,
            SPOOL_API_KEYS="key-a-0123456789=tenant-a",
            SPOOL_DEMO_HANDLERS="true",
        )
        served = spool_serve_logged(tmp_path / "serve.log", "--no-worker", env=env)
        port = int(served.url.rsplit(":", 1)[1])
        idle: list[socket.socket] = []
        statuses: list[int | str] = []
        try:
            idle = [
                socket.create_connection(("127.0.0.1", port), timeout=WAIT) for _ in range(1200)
            ]

            def enqueue(n: int) -> None:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=WAIT)
                try:
                    body = json.dumps({"type": "echo", "payload": {"n": n}})
                    conn.request("POST", "/enqueue", body, {"X-API-Key": "key-a-0123456789"})
                    statuses.append(conn.getresponse().status)
                except OSError as exc:
                    statuses.append(repr(exc))
                finally:
                    conn.close()

            threads = [threading.Thread(target=enqueue, args=(n,)) for n in range(20)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(WAIT * 2)
            assert statuses == [201] * 20, (tmp_path / "serve.log").read_text()[-3000:]
        finally:
            for sock in idle:
                sock.close()
            stop(served.proc)

"""The client's promise under failure: a retried enqueue never makes a second job.

- `spool serve` (SQLite file) is killed with SIGKILL in the middle of an
  enqueue, then restarted on the same file: before the request reached it, or
  after it stored the job but before the answer left (the client never hears).
  The client keeps retrying through the outage: exactly one job.
- Postgres behind `spool serve` fails (503): the connection drops right after
  COMMIT was sent (the job is stored, the API answers 503: the case that made
  duplicates before), or the database is unreachable for a while. Retried, one job.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import threading
from pathlib import Path

import httpx
import pytest

from spool_client import AsyncClient, Client, Enqueued, RetryPolicy
from tests.apikit import KEY_A
from tests.client_servers import port_of, serve
from tests.fault_proxy import FaultProxy
from tests.pg_proxy import pg_proxy
from tests.pg_support import fresh_schema
from tests.procs import Served, stop

pytestmark = pytest.mark.slow

# Patient enough to outlast a restart (~2 s here), quick enough to notice it.
PATIENT = RetryPolicy(attempts=60, base=0.05, cap=0.5, deadline=60)


async def _enqueue_async(url: str) -> Enqueued:
    async with AsyncClient(url, KEY_A, retry=PATIENT) as spool:
        return await spool.enqueue("echo", {"order": 7})


def _stored_jobs(db: Path) -> list[tuple[str, str | None]]:
    with sqlite3.connect(db) as conn:
        return conn.execute("SELECT id, idempotency_key FROM jobs").fetchall()


@pytest.mark.parametrize(
    "moment, kind", [("before", "sync"), ("after", "sync"), ("after", "async")]
)
def test_a_server_killed_mid_enqueue_and_restarted_leaves_exactly_one_job(
    tmp_path: Path, moment: str, kind: str
) -> None:
    db = tmp_path / "spool.db"
    log = tmp_path / "serve.log"
    first = serve(f"sqlite:///{db}", log, "--no-worker")
    servers: list[Served] = [first]
    proxy = FaultProxy(port_of(first.url))

    def restart() -> None:
        if not proxy.fired.wait(30):
            return
        first.proc.wait(10)
        second = serve(f"sqlite:///{db}", log, "--no-worker")
        servers.append(second)
        proxy.upstream_port = port_of(second.url)

    proxy.arm(b"POST /enqueue", moment, lambda: os.kill(first.proc.pid, signal.SIGKILL))
    restarter = threading.Thread(target=restart)
    restarter.start()
    try:
        with Client(proxy.url, KEY_A, retry=PATIENT) as spool:
            if kind == "sync":
                job = spool.enqueue("echo", {"order": 7})
            else:
                job = asyncio.run(_enqueue_async(proxy.url))
            restarter.join(30)
            assert proxy.fired.is_set() and len(servers) == 2, log.read_text()
            assert first.proc.returncode == -signal.SIGKILL
            # "after": the first try stored the job, so the retry found it by its key.
            assert job.created is (moment == "before")
            assert [j.id for j in spool.list()] == [job.id]
        assert _stored_jobs(db) == [(job.id, job.idempotency_key)]
    finally:
        restarter.join(30)
        proxy.close()
        for server in servers:
            stop(server.proc)


@pytest.mark.postgres
def test_a_503_for_a_write_that_committed_is_retried_into_the_same_job(tmp_path: Path) -> None:
    """The issue's case: Postgres committed the job, the connection died before the
    reply, the API answered 503. The retry carries the same key: the same job."""
    with fresh_schema() as url:
        proxy = FaultProxy(5432)
        proxied = url.replace("127.0.0.1:5432", f"127.0.0.1:{proxy.port}")
        assert proxied != url
        server = serve(proxied, tmp_path / "serve.log", "--no-worker")
        try:
            with Client(server.url, KEY_A, retry=PATIENT) as spool:
                spool.enqueue("echo", {"warm": True}, delay=60)  # the pool is connected
                proxy.arm(b"COMMIT", "after")
                job = spool.enqueue("echo", {"order": 8}, delay=60)
                assert proxy.fired.is_set(), "the fault never fired: no COMMIT went by"
                assert not job.created  # stored by the try that got the 503
                jobs = [j for j in spool.list() if j.payload == {"order": 8}]
                assert [j.id for j in jobs] == [job.id]
        finally:
            stop(server.proc)
            proxy.close()


@pytest.mark.postgres
def test_a_store_outage_is_retried_through_and_makes_one_job(tmp_path: Path) -> None:
    # pool_timeout=1: the API answers 503 after a second without a connection.
    with fresh_schema(pool_timeout="1") as url, pg_proxy() as pg:
        proxied = url.replace("127.0.0.1:5432", f"127.0.0.1:{pg.port}")
        server = serve(proxied, tmp_path / "serve.log", "--no-worker")
        statuses: list[int] = []
        try:
            hooks = {"response": [lambda r: statuses.append(r.status_code)]}
            with (
                httpx.Client(event_hooks=hooks) as http,
                Client(server.url, KEY_A, retry=PATIENT, http=http) as spool,
            ):
                spool.enqueue("echo", {"warm": True}, delay=60)
                pg.cut()
                timer = threading.Timer(2.5, pg.restore)
                timer.start()
                job = spool.enqueue("echo", {"order": 9}, delay=60)
                timer.join()
                assert 503 in statuses
                assert job.created
                jobs = [j for j in spool.list() if j.payload == {"order": 9}]
                assert [j.id for j in jobs] == [job.id]
        finally:
            stop(server.proc)


@pytest.mark.parametrize("verb", ["cancel", "redrive"])
def test_a_cancel_or_redrive_whose_answer_was_lost_settles_on_the_job(
    tmp_path: Path, verb: str
) -> None:
    """The first try was applied, its answer lost: the retry's 409 ("already
    cancelled", "not dead") means the work is done, not a failure."""
    db, log = f"sqlite:///{tmp_path}/spool.db", tmp_path / "serve.log"
    if verb == "redrive":  # a dead job, then a server with no worker to run it again
        with_worker = serve(db, log)
        try:
            with Client(with_worker.url, KEY_A) as spool:
                job_id = spool.enqueue("fail", {"always": True}, max_attempts=1).id
                assert spool.wait(job_id, timeout=20).state == "dead"
        finally:
            stop(with_worker.proc)
    server = serve(db, log, "--no-worker")
    proxy = FaultProxy(port_of(server.url))
    try:
        with Client(proxy.url, KEY_A, retry=PATIENT) as spool:
            if verb == "cancel":
                job_id = spool.enqueue("echo", {}, delay=300).id
            proxy.arm(f"/{job_id}/{verb}".encode(), "after")
            job = spool.cancel(job_id) if verb == "cancel" else spool.redrive(job_id)
            assert proxy.fired.is_set()
            assert (job.id, job.state) == (job_id, "cancelled" if verb == "cancel" else "queued")
    finally:
        proxy.close()
        stop(server.proc)

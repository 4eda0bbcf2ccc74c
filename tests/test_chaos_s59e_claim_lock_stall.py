"""A claim stalled while holding the Postgres claim lock must not cost other workers
their running jobs.

Claims under limits or fair turns take one advisory lock per schema
(postgres_limits). A process paused mid-claim (SIGSTOP, a frozen VM, swapping)
keeps it until the server ends its idle transaction (statement_timeout, 30 s by
default). Every other worker's claim waited that long for it on the dispatcher
thread, which is also the thread that renews leases: with SPOOL_LEASE_SECONDS=6,
a healthy worker's leases lapsed while it waited, the claim that finally got the
lock reaped them, and its jobs ran again beside their first attempts (the
finished ones had their outcome refused, "lease_lost"), past a concurrency limit
of 2 (reproduced with two `spool worker` processes and the lock held for 15 s
from psql). The wait is now bounded well inside the lease, so the worker renews.
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime
from typing import Any

from chalicelib.handlers import Registry
from chalicelib.limits import ClaimPolicy, Limit
from chalicelib.models import JobState
from chalicelib.storage import open_store
from chalicelib.storage.postgres import parse_url
from chalicelib.storage.postgres_limits import LOCK_SPACE
from chalicelib.worker import Worker, WorkerConfig
from tests.pg_support import admin_connect, fresh_schema
from tests.test_limits_worker import _jobs

LEASE = 3.0


def _running_lease(admin: Any, schema: str) -> datetime | None:
    row = admin.execute(
        f'SELECT lease_expires_at FROM "{schema}".jobs WHERE state = %s', ("running",)
    ).fetchone()
    return None if row is None else row[0]


def _wait(check: Any, seconds: float = 15) -> Any:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    return check()


def test_a_worker_keeps_its_leases_while_another_claim_holds_the_lock() -> None:
    registry = Registry()
    started: list[str] = []
    release = threading.Event()

    @registry.handler("gated", concurrency=1)
    def gated(payload: dict[str, Any], ctx: Any) -> None:
        started.append(ctx.job.id)
        release.wait(20)

    with fresh_schema() as url:
        store = open_store(url)
        schema = parse_url(url).key_schema
        assert schema is not None
        admin = admin_connect()
        # One runs, one is held by the limit: the worker keeps claiming meanwhile.
        ids = [r.job.id for r in store.add(_jobs(2, "gated"))]
        policy = ClaimPolicy((Limit("type", "gated", 1),))
        config = WorkerConfig(concurrency=2, lease_seconds=LEASE, policy=policy)
        worker = Worker(store, registry, config)
        thread = threading.Thread(target=worker.run, daemon=True)
        thread.start()
        try:
            assert _wait(lambda: started), "the first job never started"
            first = _wait(lambda: _running_lease(admin, schema))
            assert first is not None
            # A claim stalls holding the lock (as a paused worker's would).
            admin.execute(
                "SELECT pg_advisory_lock(%s::int, hashtext(%s::text))", (LOCK_SPACE, schema)
            )
            try:
                # Held until the worker renews the running job's lease, or until that
                # lease runs out unrenewed (the worker stuck waiting for the lock).
                def settled() -> bool:
                    lease = _running_lease(admin, schema)
                    return lease is None or lease > first or datetime.now(UTC) > first

                assert _wait(settled)
                renewed = _running_lease(admin, schema)
            finally:
                admin.execute(
                    "SELECT pg_advisory_unlock(%s::int, hashtext(%s::text))", (LOCK_SPACE, schema)
                )
            assert renewed is not None and renewed > first, "the lease lapsed while it waited"
            release.set()

            def done() -> bool:
                jobs = [store.get(i) for i in ids]
                return all(j is not None and j.state is JobState.SUCCEEDED for j in jobs)

            assert _wait(done)
            jobs = [store.get(i) for i in ids]
            assert [j.attempts for j in jobs if j is not None] == [1, 1]
            assert sorted(started) == sorted(ids)  # each ran once: none ran again
        finally:
            release.set()
            worker.stop()
            thread.join(10)
            admin.close()
            store.close()

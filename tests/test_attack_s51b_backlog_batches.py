"""Batches sent together never take a tenant past its backlog (stop 51, helper b).

Two API processes each check the waiting count and then add: two batches of 6 that
each fit a backlog of 10 holding 0 fit it together only if one of them is refused.
Here two stores on one SQLite file (and on one Postgres schema), each behind its
own EnqueueGate as two processes would be, take batches from real threads released
together, round after round: no round ends with more jobs waiting than the backlog.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from chalicelib.api.throttle import EnqueueGate, RateLimited
from chalicelib.config import Settings
from chalicelib.errors import PayloadTooLarge
from chalicelib.handlers import Registry
from chalicelib.limit_settings import TenantLimit, TenantLimits
from chalicelib.service import EnqueueRequest, Service
from chalicelib.storage import open_store
from chalicelib.storage.base import JobStore
from tests.apikit import installed, settings_for
from tests.pg_support import sqlite_or_postgres

BACKLOG = 10
BATCH = 6
THREADS = 4  # per process
ROUNDS = 6


def _process(store: JobStore, registry: Registry) -> tuple[EnqueueGate, Service]:
    """One API process's edge: its own gate (and lock) and service, on `store`."""
    capped = TenantLimit(backlog=BACKLOG)
    limits = TenantLimits(TenantLimit(), {f"round{r}": capped for r in range(ROUNDS)})
    return EnqueueGate(store, limits), Service(store, registry, Settings())


def _send(
    process: tuple[EnqueueGate, Service],
    tenant: str,
    barrier: threading.Barrier,
    outcomes: list[str],
) -> None:
    """One request of a batch of BATCH jobs, sent when every thread is ready."""
    gate, service = process
    jobs = [EnqueueRequest(type="echo", delay=3600) for _ in range(BATCH)]
    built = service.prepare(jobs, tenant)
    barrier.wait(30)
    try:
        with gate.admitted(tenant, [None] * BATCH) as cap:
            service.add_prepared(jobs, built, cap)
        outcomes.append("stored")
    except (RateLimited, PayloadTooLarge) as refused:
        outcomes.append(type(refused).__name__)


@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def test_batches_from_two_processes_never_pass_the_backlog(backend: str, tmp_path: Path) -> None:
    with sqlite_or_postgres(backend, tmp_path) as url:
        stores = [open_store(url), open_store(url)]
        try:
            with installed(settings_for(tmp_path, store_url=url)) as rt:  # the handlers
                processes = [_process(store, rt.registry) for store in stores]
            for r in range(ROUNDS):
                tenant = f"round{r}"
                barrier = threading.Barrier(THREADS * len(processes))
                outcomes: list[str] = []
                threads = [
                    threading.Thread(target=_send, args=(process, tenant, barrier, outcomes))
                    for process in processes
                    for _ in range(THREADS)
                ]
                for thread in threads:
                    thread.start()
                for thread in threads:
                    thread.join(60)
                waiting = stores[0].waiting_count(tenant)
                assert waiting <= BACKLOG, (waiting, outcomes)
                # Exactly one batch fits; every other is refused (a 429), none lost.
                assert len(outcomes) == len(threads), outcomes
                assert outcomes.count("stored") == 1 and waiting == BATCH, outcomes
        finally:
            for store in stores:
                store.close()

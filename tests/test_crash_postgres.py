"""Crash tests on Postgres: real worker processes, SIGKILLed, and the server restarted.

Bounded in time and count. What they hold the store to:
- kills: 5,000 jobs, 4 workers, one SIGKILLed at most every 0.25 s and 50 jobs
  and restarted (tests/crash_harness.py):
  none lost (each succeeded), none stuck, re-runs (duplicates) <= kills;
- a Postgres restart (`-m immediate`, crash recovery) under load: every
  acknowledged enqueue survives, and the same worker processes finish the
  work without being restarted. The server restarted is a private one
  (tests/pg_private.py): the shared server stays up for the other tests, which
  may be running on other workers meanwhile.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from chalicelib.errors import StoreUnavailable
from chalicelib.handlers import Registry
from chalicelib.models import JobState
from chalicelib.service import EnqueueRequest, Service
from chalicelib.storage.postgres import PostgresStore, from_url
from tests.crash_handlers import CRASH_JOB_TYPE
from tests.crash_harness import check_crash, duplicates, run_crash
from tests.pg_crash_harness import WorkerPool
from tests.pg_private import PrivateServer, private_server
from tests.pg_support import fresh_schema

# One at a time on parallel workers: see "heavy" in docs/testing.md.
pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.xdist_group("heavy")]

WAITING = (JobState.QUEUED, JobState.RUNNING, JobState.RETRYING)


@pytest.fixture
def registry(handlers: Registry, registry_restored: Registry) -> Registry:
    """The process-wide registry with the crash handler, put back after the test."""
    handlers.load(["tests.crash_handlers"])
    return handlers


def _states(store: PostgresStore) -> dict[JobState, int]:
    totals: dict[JobState, int] = {}
    for (_, state), n in store.counts().items():
        totals[state] = totals.get(state, 0) + n
    return totals


def _enqueue(service: Service, n: int, payload: dict[str, float]) -> set[str]:
    ids: set[str] = set()
    for start in range(0, n, 500):
        batch = [
            EnqueueRequest(type=CRASH_JOB_TYPE, payload=payload) for _ in range(min(500, n - start))
        ]
        ids.update(r.job.id for r in service.enqueue(batch, "crash"))
    return ids


@pytest.mark.timeout(600)
def test_sigkilled_workers_lose_nothing(tmp_path: Path) -> None:
    """The shared crash harness (tests/crash_harness.py), on Postgres. It ends a run
    that stalls; the time limit is only a backstop inside the test's timeout."""
    with fresh_schema() as url:
        run = run_crash(
            url, tmp_path, jobs=5_000, workers=4, kill_every=0.25, jobs_per_kill=50, time_limit=480
        )
    print(f"{run.kills} kills, {duplicates(run)} duplicate executions, {run.seconds:.1f}s")
    assert run.kills >= 10, f"too few kills to mean anything ({run.kills})"
    assert len(run.states) == 5_000
    assert check_crash(run) == []  # 0 lost, 0 stuck, duplicates <= kills


# -- Postgres itself restarts ------------------------------------------------------


def _server_up(url: str) -> bool:
    import psycopg

    try:
        with psycopg.connect(url, connect_timeout=2) as conn:
            conn.execute("SELECT 1")
        return True
    except psycopg.OperationalError:
        return False


@contextlib.contextmanager
def _server_restored(server: PrivateServer) -> Iterator[None]:
    """Whatever happens in the test, the server is running again afterwards (the
    schema's teardown and the store's last reads need it)."""
    try:
        yield
    finally:
        deadline = time.monotonic() + 60
        while not _server_up(server.url) and time.monotonic() < deadline:
            server.ensure_running()
            time.sleep(1)
        assert _server_up(server.url), f"Postgres did not come back: {server.tail()}"


def test_workers_resume_after_postgres_restarts(tmp_path: Path, registry: Registry) -> None:
    with (
        private_server() as server,  # skips saying why; fails in CI (tests/pg_support.py)
        fresh_schema(base=server.url) as url,
        _server_restored(server),
    ):
        store = from_url(url + "&pool_timeout=2")
        service = Service(store, registry)
        pool = WorkerPool(url, tmp_path, lease_seconds=5)
        acknowledged = _enqueue(service, 1500, {"work": 0.004})
        stop = threading.Event()
        refused = 0

        def produce() -> None:
            # Load that keeps coming through the restart; only acknowledged jobs count.
            nonlocal refused
            while not stop.is_set():
                try:
                    acknowledged.update(_enqueue(service, 20, {"work": 0.004}))
                except StoreUnavailable:
                    refused += 1
                time.sleep(0.05)

        producer = threading.Thread(target=produce, daemon=True)
        try:
            pool.start()
            deadline = time.monotonic() + 60
            while _states(store).get(JobState.SUCCEEDED, 0) < 300:
                assert time.monotonic() < deadline, "workers made no progress before the restart"
                time.sleep(0.1)
            producer.start()
            time.sleep(0.5)
            at_restart = _states(store)
            restarted = server.restart_immediate()
            assert restarted.returncode == 0, restarted.stderr + server.tail()
            time.sleep(2.0)
            stop.set()
            producer.join(30)
            expected = len(acknowledged)  # at least; see the note at the end
            deadline = time.monotonic() + 180
            while time.monotonic() < deadline:
                with contextlib.suppress(StoreUnavailable):
                    now = _states(store)
                    waiting = sum(now.get(s, 0) for s in WAITING)
                    if now.get(JobState.SUCCEEDED, 0) >= expected and not waiting:
                        break
                time.sleep(0.25)
            assert pool.exited() == [], "a worker exited instead of riding out the restart"
        finally:
            stop.set()
            codes = pool.stop()
        states = _states(store)
        present = {j for j in acknowledged if store.get(j) is not None}
        store.close()
    print(f"at restart: {at_restart}; refused enqueues: {refused}; total {len(acknowledged)}")
    assert at_restart.get(JobState.QUEUED, 0) > 0  # the restart hit a queue with work in it
    assert present == acknowledged  # 0 lost: every acknowledged enqueue survived
    # An enqueue refused mid-restart may still have committed (its reply was what got
    # lost), so the store may hold a few more jobs than were acknowledged: all must run.
    stored = sum(states.values())
    assert stored >= len(acknowledged)
    assert states.get(JobState.SUCCEEDED, 0) == stored, states
    assert sum(states.get(s, 0) for s in WAITING) == 0, states
    assert set(pool.executions()) >= acknowledged
    assert codes == [0] * pool.size  # the same processes, still healthy, stopped cleanly

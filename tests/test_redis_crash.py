"""Crash tests on Redis: workers SIGKILLed, and redis-server itself SIGKILLed.

- kills: 5,000 jobs, 4 `spool worker` processes, one SIGKILLed at most every
  0.25 s and 50 jobs and restarted (tests/crash_harness.py, as on SQLite and
  Postgres): none lost, none stuck, re-runs (duplicates) <= kills;
- durability: a private redis-server (its own directory and port, AOF with
  appendfsync always, no RDB snapshots) is SIGKILLed while enqueues are under
  way, restarted on the same directory, and every enqueue that was acknowledged
  is there. The shared server on 6379 keeps nothing on disk, so it is not used.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from chalicelib.errors import StoreUnavailable
from chalicelib.models import NewJob
from chalicelib.storage.redis_store import RedisStore, from_url
from tests.crash_harness import check_crash, duplicates, run_crash
from tests.factories import new_job
from tests.redis_support import PrivateServer, fresh_prefix, private_server, with_prefix

pytestmark = pytest.mark.slow


# One at a time on parallel workers: see "heavy" in docs/testing.md.
@pytest.mark.xdist_group("heavy")
@pytest.mark.timeout(600)
def test_sigkilled_workers_lose_nothing_on_redis(tmp_path: Path) -> None:
    with fresh_prefix() as url:
        run = run_crash(
            url,
            tmp_path,
            jobs=5_000,
            workers=4,
            kill_every=0.25,
            jobs_per_kill=50,
            work=0.003,
            time_limit=480,
        )
    print(f"\n{run.kills} kills, {duplicates(run)} duplicate executions, {run.seconds:.1f}s")
    assert run.kills >= 10, f"too few kills to mean anything ({run.kills} in {run.seconds:.1f}s)"
    assert len(run.states) == 5_000
    problems = check_crash(run)
    assert not problems, "\n".join(problems)


def _batch(store: RedisStore, n: int) -> list[NewJob]:
    from chalicelib.clock import FakeClock

    clock = FakeClock(store.clock.now())
    return [new_job(clock, payload={"i": i}) for i in range(n)]


def _enqueue_then_kill(server: PrivateServer) -> tuple[set[str], int, list[str]]:
    """Four producers enqueue (single adds and small batches) until 3,000 are
    acknowledged; the server is SIGKILLed mid-stream and restarted on its directory.
    Returns the acknowledged ids, the refused calls and the acknowledged ids missing."""
    url = with_prefix(server.url, "durable") + "&timeout=2"
    acknowledged: set[str] = set()
    refused = 0
    stop = threading.Event()

    def produce(worker: int) -> None:
        nonlocal refused
        store = from_url(url)
        try:
            while not stop.is_set():
                try:
                    results = store.add(_batch(store, 1 + worker * 4))
                except StoreUnavailable:
                    refused += 1
                    continue
                acknowledged.update(r.job.id for r in results if r.created)
        finally:
            store.close()

    producers = [threading.Thread(target=produce, args=(w,)) for w in range(4)]
    for thread in producers:
        thread.start()
    deadline = time.monotonic() + 30
    while len(acknowledged) < 3000 and time.monotonic() < deadline:
        time.sleep(0.02)
    server.kill()
    stop.set()
    for thread in producers:
        thread.join(30)
    server.start()  # the same directory: it replays the AOF
    store = from_url(url)
    try:
        missing = [i for i in acknowledged if store.get(i) is None]
    finally:
        store.close()
    return acknowledged, refused, missing


@pytest.mark.timeout(120)
def test_appendfsync_always_keeps_every_acknowledged_job_through_kill_9(tmp_path: Path) -> None:
    with private_server(tmp_path / "redis", appendfsync="always") as server:
        acknowledged, refused, missing = _enqueue_then_kill(server)
    print(f"\n{len(acknowledged)} acknowledged, {refused} refused while the server died")
    assert len(acknowledged) >= 3000, "too little load to mean anything"
    assert missing == [], f"{len(missing)} acknowledged job(s) lost, e.g. {missing[:3]}"


@pytest.mark.timeout(120)
def test_the_durability_check_sees_a_loss_without_persistence(tmp_path: Path) -> None:
    """The same run on a server that keeps nothing on disk loses every job: the check
    above can fail, so its passing means the AOF kept them."""
    with private_server(tmp_path / "redis", appendfsync="no") as server:
        acknowledged, _, missing = _enqueue_then_kill(server)
    assert len(acknowledged) >= 3000
    assert len(missing) == len(acknowledged)

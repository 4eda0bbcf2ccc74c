"""Under a rate limit no store write stands between a job's claim and its handler.

The store stamps a rate-limited start when the claim takes the job, and counts
starts over the window and a tenth of it more (limits.Rate.window), so handlers
keep the rate by their own clocks only if each begins within that margin of its
claim. Claims under a policy were unstarted, so each pool thread wrote a start
mark (a store round trip) before calling the handler: on a busy Postgres that was
100-300 ms, and twelve `spool worker` processes under "20/s" logged 24 handler
starts in one second (three under "2/s" logged 4). Under a rate limit a worker
claims no more than its free threads, so its jobs are claimed started.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from chalicelib.handlers import Registry
from chalicelib.limits import ClaimPolicy, Limit, Rate
from chalicelib.models import JobState
from chalicelib.storage import open_store
from chalicelib.worker import Worker, WorkerConfig
from tests.test_limits_worker import _jobs


def test_a_rate_limited_job_runs_with_no_start_mark_written_after_its_claim(
    tmp_path: Path,
) -> None:
    registry = Registry()
    ran: list[str] = []

    @registry.handler("paced", rate="50/s")
    def paced(payload: dict[str, Any], ctx: Any) -> None:
        ran.append(ctx.job.id)

    store = open_store(f"sqlite:///{tmp_path}/spool.db")
    marks: list[Any] = []
    start = store.start

    def counted(leases: Any) -> Any:
        marks.extend(leases)
        return start(leases)

    store.start = counted  # type: ignore[method-assign]
    ids = [r.job.id for r in store.add(_jobs(6, "paced"))]
    policy = ClaimPolicy((Limit("type", "paced", rate=Rate(50, 1.0)),))
    worker = Worker(store, registry, WorkerConfig(concurrency=2, policy=policy))
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            jobs = [store.get(i) for i in ids]
            if all(j is not None and j.state is JobState.SUCCEEDED for j in jobs):
                break
            time.sleep(0.02)
        jobs = [store.get(i) for i in ids]
        assert [j.state for j in jobs if j is not None] == [JobState.SUCCEEDED] * 6
        assert all(j is not None and j.attempts == 1 for j in jobs)
        assert sorted(ran) == sorted(ids)
        assert marks == []  # each claimed started: its handler was next
    finally:
        worker.stop()
        thread.join(10)
        store.close()

"""A pool thread that cannot be started (the process at its thread limit: a handler
leaking threads makes it so) is not counted as one the worker has."""

from __future__ import annotations

import random
import threading
from typing import Any

import pytest

from chalicelib import logs
from chalicelib.clock import FakeClock
from chalicelib.handlers import Registry
from chalicelib.models import JobState
from chalicelib.storage.memory import MemoryStore
from chalicelib.worker import Worker, WorkerConfig, WorkerStats
from tests.test_worker import add, get


@pytest.mark.timeout(60)
def test_a_worker_whose_pool_thread_would_not_start_runs_its_jobs_on_the_next_try(
    mem: MemoryStore, clock: FakeClock, reg: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Was: the first drain failed (RuntimeError), the next one claimed the job for the
    thread counted but never started and waited for it forever, the job `running`."""
    real = logs.inherited_thread
    refused: list[str] = []

    def at_the_limit_once(target: Any, name: str = "", **kwargs: Any) -> Any:
        thread = real(target, name=name, **kwargs)
        if name == "spool-pool" and not refused:
            refused.append(name)

            def start() -> None:
                raise RuntimeError("can't start new thread")

            thread.start = start  # type: ignore[method-assign]
        return thread

    monkeypatch.setattr("chalicelib.worker.logs.inherited_thread", at_the_limit_once)
    reg.handler("fine", max_attempts=1)(lambda payload: "ok")
    job = add(mem, clock, "fine", max_attempts=1)
    worker = Worker(mem, reg, WorkerConfig(concurrency=1, lease_seconds=30), rng=random.Random(1))
    try:
        with pytest.raises(RuntimeError, match="can't start new thread"):
            worker.drain()
        assert get(mem, job.id).state is JobState.QUEUED  # nothing claimed without a thread
        done: list[WorkerStats] = []
        second = threading.Thread(target=lambda: done.append(worker.drain()), daemon=True)
        second.start()
        second.join(30)
        assert done, "the second drain never returned"
    finally:
        worker.stop()
        worker.close()
    assert refused == ["spool-pool"]
    assert get(mem, job.id).state is JobState.SUCCEEDED

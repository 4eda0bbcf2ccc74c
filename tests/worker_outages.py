"""What every "the worker waits out this outage" test checks, whatever the store."""

from __future__ import annotations

import threading
import time

import pytest

from chalicelib.handlers import Registry
from chalicelib.storage.base import JobStore
from chalicelib.worker import Worker, WorkerConfig


def assert_worker_rides_out(store: JobStore, caplog: pytest.LogCaptureFixture) -> None:
    """Run a worker on a store that refuses it until it has logged the outage, then stop
    it: it must still be alive when it met the refusal, and stop without raising."""
    worker = Worker(store, Registry(), WorkerConfig(concurrency=1, idle_poll=0.05))
    failed: list[BaseException] = []

    def run() -> None:
        try:
            worker.run()
        except BaseException as exc:
            failed.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    deadline = time.monotonic() + 30
    while not any("store unavailable" in r.getMessage() for r in caplog.records):
        assert time.monotonic() < deadline, "the worker never met the refusal"
        assert thread.is_alive(), failed
        time.sleep(0.05)
    worker.stop()
    thread.join(30)
    assert not thread.is_alive()
    assert failed == []

"""/health when the server cannot start a thread for a moment.

/health checks the store on a thread of its own (HealthProbe), started at the first
probe. Under an address-space limit (`ulimit -v`, a container's memory) that start
can fail: `spool serve` under `ulimit -v 1200000` answered its first /health 500
("can't start new thread"), and every /health after it 503 "the job store gave no
answer within 3 s", for as long as it ran, memory freed or not: the probe was left
waiting for a run of a thread that never started. Now the failed start is a 503 for
that probe, and the next probe starts the thread again.
"""

from __future__ import annotations

import threading

import pytest

from chalicelib.api.routes import HealthProbe
from chalicelib.errors import StoreUnavailable


class _Owner:
    def __init__(self) -> None:
        self.checks = 0

    def check(self) -> None:
        self.checks += 1


def test_a_thread_that_did_not_start_is_started_by_the_next_probe(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    owner = _Owner()
    probe = HealthProbe(owner.check)
    real_start = threading.Thread.start
    failures = [RuntimeError("can't start new thread")]

    def start(thread: threading.Thread) -> None:
        if failures:
            raise failures.pop()
        real_start(thread)

    monkeypatch.setattr(threading.Thread, "start", start)
    with pytest.raises(StoreUnavailable) as refused:
        probe.run(3.0)
    assert "thread" in str(refused.value)
    assert owner.checks == 0
    probe.run(3.0)  # the next probe starts the thread and is answered
    assert owner.checks == 1
    probe.run(3.0)
    assert owner.checks == 2

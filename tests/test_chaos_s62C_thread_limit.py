"""A worker that may start fewer pool threads than its concurrency runs with those it has
(stop 62, helper C).

Was (found with a real `spool worker --burst --concurrency 8` under a 300 MB address-
space limit, where two pool threads fit): the third thread's start raised "can't start
new thread" out of the first drain, and the worker exited 1 with "spool: unexpected
error: RuntimeError: can't start new thread. Rerun with SPOOL_DEBUG=1", its jobs left
queued; the same worker at --concurrency 2 ran them all. A claim of large payloads
that ran it out of memory said "unexpected error: MemoryError".

Now the worker runs with the pool threads it started and says once, on spool.worker,
how many of how many and why (the thread limit, ulimit -u, or address space for a
stack, ulimit -v), trying again at its next drain; with none at all it stops saying
so. The command line says what ran short and what to change for MemoryError and a
thread refused, not "unexpected error".
"""

from __future__ import annotations

import logging
import random
import resource
import subprocess
import threading
from pathlib import Path
from typing import Any

import pytest

from chalicelib import logs
from chalicelib.clock import FakeClock
from chalicelib.handlers import Registry
from chalicelib.models import JobState
from chalicelib.storage.memory import MemoryStore
from chalicelib.worker import Worker, WorkerConfig
from local.cli_errors import explain
from tests.procs import SPOOL, guarded_env, run_spool
from tests.test_worker import add, get

pytestmark = pytest.mark.timeout(300)

GIB = 1024 * 1024 * 1024


def refuse_threads_past(
    monkeypatch: pytest.MonkeyPatch, names: tuple[str, ...], allowed: int
) -> list[str]:
    """The worker's threads named `names` start until `allowed` of them have; each one
    after raises "can't start new thread" from its start, as a process at its thread
    or address-space limit does. Returns the names in the order they were made."""
    real = logs.inherited_thread
    started: list[str] = []

    def limited(target: Any, name: str = "", **kwargs: Any) -> Any:
        thread = real(target, name=name, **kwargs)
        if name in names:
            started.append(name)
            if len(started) > allowed:

                def start() -> None:
                    raise RuntimeError("can't start new thread")

                thread.start = start  # type: ignore[method-assign]
        return thread

    monkeypatch.setattr("chalicelib.worker.logs.inherited_thread", limited)
    return started


def test_a_worker_refused_its_third_pool_thread_runs_its_jobs_on_two(
    mem: MemoryStore,
    clock: FakeClock,
    reg: Registry,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    refuse_threads_past(monkeypatch, ("spool-pool",), 2)
    reg.handler("fine", max_attempts=1)(lambda payload: "ok")
    jobs = [add(mem, clock, "fine", max_attempts=1) for _ in range(5)]
    worker = Worker(mem, reg, WorkerConfig(concurrency=4, lease_seconds=30), rng=random.Random(1))
    with caplog.at_level(logging.WARNING, logger="spool.worker"):
        try:
            worker.drain()
            worker.drain()  # tries again: refused again, not said again
        finally:
            worker.close()
    assert [get(mem, job.id).state for job in jobs] == [JobState.SUCCEEDED] * 5
    said = [r.getMessage() for r in caplog.records if "pool threads" in r.getMessage()]
    assert len(said) == 1, said
    assert said[0].startswith("runs 2 of its 4 pool threads: the process may start no more")
    assert "ulimit -u" in said[0] and "can't start new thread" in said[0]


@pytest.mark.parametrize(
    ("exc", "words"),
    [
        (MemoryError(), "out of memory (MemoryError)"),
        (RuntimeError("can't start new thread"), "could not start a thread"),
    ],
)
def test_the_command_line_says_what_ran_short(exc: BaseException, words: str) -> None:
    failure = explain(exc)
    assert failure.problem.startswith(words), failure.problem
    assert "unexpected error" not in failure.problem
    assert "--concurrency" in failure.fix and "ulimit -v" in failure.fix


def _limits(address_space: int) -> Any:
    def apply() -> None:
        # Each thread's stack is reserved at the stack limit: 1 GiB, so the address-space
        # limit, raised a GiB at a time, lets one more thread start each step.
        resource.setrlimit(resource.RLIMIT_STACK, (GIB, GIB))
        resource.setrlimit(resource.RLIMIT_AS, (address_space, address_space))

    return apply


_HARD_STACK = resource.getrlimit(resource.RLIMIT_STACK)[1]


@pytest.mark.skipif(
    _HARD_STACK != resource.RLIM_INFINITY and _HARD_STACK < GIB,
    reason="the hard stack limit is under 1 GiB: the test raises it to that",
)
def test_a_real_worker_short_of_address_space_runs_with_the_threads_it_has(
    tmp_path: Path,
) -> None:
    for _ in range(6):
        added = run_spool(tmp_path, "enqueue", "echo", "--payload", "{}")
        assert added.returncode == 0, added.stderr
    outcomes: list[str] = []
    for gib in range(1, 12):
        ran = subprocess.run(
            [str(SPOOL), "worker", "--burst", "--concurrency", "4"],
            cwd=tmp_path,
            env=guarded_env(SPOOL_DEMO_HANDLERS="true"),
            capture_output=True,
            encoding="utf-8",
            errors="replace",
            timeout=120,
            preexec_fn=_limits(gib * GIB),
        )
        log = ran.stderr
        assert "unexpected error" not in log, log
        if ran.returncode == 0:
            outcomes.append(log)
            break
        assert "ulimit -v" in log, log  # too short for even one pool thread: said so
    assert outcomes, "no address-space limit up to 11 GiB let the worker run"
    log = outcomes[0]
    assert "done: 6 succeeded" in log, log
    assert "WARNING spool.worker: runs " in log and " of its 4 pool threads" in log, log


class _ShortOfMemory(MemoryStore):
    """A store whose claims of more than `most` jobs run the process out of memory,
    as decoding that many large payloads at once did under a 300 MB limit."""

    most = 1
    asked: list[int]

    def claim(self, limit: int, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        self.asked.append(limit)
        if limit > self.most:
            raise MemoryError
        return super().claim(limit, *args, **kwargs)


def test_a_claim_that_runs_out_of_memory_is_made_again_smaller(
    clock: FakeClock, reg: Registry, caplog: pytest.LogCaptureFixture
) -> None:
    """Was: every claim of 4 failed, said as "store unavailable (MemoryError)" and tried
    again as it was, forever; `--burst` ended with the MemoryError, nothing run."""
    store = _ShortOfMemory(clock)
    store.asked = []
    reg.handler("fine", max_attempts=1)(lambda payload: "ok")
    jobs = [add(store, clock, "fine", max_attempts=1) for _ in range(6)]
    worker = Worker(store, reg, WorkerConfig(concurrency=4, lease_seconds=30), rng=random.Random(1))
    with caplog.at_level(logging.WARNING, logger="spool.worker"):
        try:
            worker.drain()
        finally:
            worker.close()
            store.close()
    assert [get(store, job.id).state for job in jobs] == [JobState.SUCCEEDED] * 6
    assert max(store.asked[store.asked.index(1) :]) == 1  # never more than one again
    said = [r.getMessage() for r in caplog.records if "out of memory" in r.getMessage()]
    assert said and said[-1].endswith(
        "claims at most 1 at a time from now on (until the worker restarts)"
    )


def test_a_worker_with_room_for_two_threads_starts_its_wake_bridge_and_one_pool_thread(
    mem: MemoryStore, clock: FakeClock, reg: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Was (a real `spool worker --concurrency 4` under a 350 MB limit): the pool took
    the room there was, and the store's wake-up bridge, started after it, could not
    start: the worker stopped with "could not start a thread"."""
    started = refuse_threads_past(monkeypatch, ("spool-pool", "spool-wake"), 2)
    reg.handler("fine", max_attempts=1)(lambda payload: "ok")
    jobs = [add(mem, clock, "fine", max_attempts=1) for _ in range(3)]
    worker = Worker(mem, reg, WorkerConfig(concurrency=4, lease_seconds=30), rng=random.Random(1))
    failed: list[BaseException] = []

    def run() -> None:
        try:
            worker.run()
        except BaseException as exc:
            failed.append(exc)

    runner = threading.Thread(target=run, daemon=True)
    runner.start()
    try:
        for job in jobs:
            assert get(mem, job.id) is not None
        deadline = 200
        while (
            deadline
            and not failed
            and any(get(mem, job.id).state is not JobState.SUCCEEDED for job in jobs)
        ):
            deadline -= 1
            runner.join(0.05)
    finally:
        worker.stop()
        runner.join(30)
        worker.close()
    assert failed == []
    assert [get(mem, job.id).state for job in jobs] == [JobState.SUCCEEDED] * 3
    assert started[:2] == ["spool-wake", "spool-pool"]

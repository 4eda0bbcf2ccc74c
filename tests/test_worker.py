"""The worker: retries and backoff, dead letters, timeouts, drain deadlines,
wake-ups, graceful stop, lease extension and SQS-style delivery.

The store is the memory store on a FakeClock, so backoff and delays are
fast-forwarded; the worker's pool is real threads, so waits on real events
are bounded by generous timeouts and nothing asserts on speed. Where the
worker's own monotonic time matters (handler timeouts, drain and process
deadlines) the `mono` fixture stands in for it, so a loaded machine cannot
make a quick attempt time out or a drain overrun its deadline.
"""

from __future__ import annotations

import os
import random
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest

from chalicelib.clock import FakeClock
from chalicelib.errors import PermanentError, RetryAfter
from chalicelib.handlers import JobContext, Registry
from chalicelib.models import CounterKey, Job, JobState
from chalicelib.retry import RetryPolicy
from chalicelib.storage.memory import MemoryStore
from chalicelib.worker import DRAIN_MARGIN, Worker, WorkerConfig, WorkerStats
from tests.factories import new_job, token

WAIT = 10.0  # generous bound for anything that waits on another thread


def add(store: MemoryStore, clock: FakeClock, type_: str, **fields: Any) -> Job:
    return store.add([new_job(clock, type_, **fields)])[0].job


def get(store: MemoryStore, job_id: str) -> Job:
    job = store.get(job_id)
    assert job is not None
    return job


def make_worker(store: MemoryStore, reg: Registry, **config: Any) -> Worker:
    config.setdefault("concurrency", 2)
    rng = config.pop("rng", None)
    return Worker(store, reg, WorkerConfig(**config), rng=rng)


def drain_once(store: MemoryStore, reg: Registry, **config: Any) -> WorkerStats:
    """One serverless-shaped run: a fresh worker drains what is due, then closes."""
    worker = make_worker(store, reg, **config)
    try:
        return worker.drain()
    finally:
        worker.close()


class FakeMonotonic:
    """Stands in for chalicelib.worker's `time` module: monotonic() is what the test
    says, everything else (sleep) is the real module."""

    def __init__(self, start: float = 1000.0) -> None:
        self._now = start
        self._lock = threading.Lock()

    def monotonic(self) -> float:
        with self._lock:
            return self._now

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._now += seconds

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)


@pytest.fixture
def mono(monkeypatch: pytest.MonkeyPatch) -> FakeMonotonic:
    """The worker's monotonic clock, moved only by the test (patch before building one)."""
    import chalicelib.worker as worker_module

    fake = FakeMonotonic()
    monkeypatch.setattr(worker_module, "time", fake)
    return fake


def wait_until(predicate: Callable[[], bool], timeout: float = WAIT) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.005)
    return predicate()


class RunInThread:
    """worker.run() on a background thread, always stopped at the end of the test."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self.thread = threading.Thread(target=worker.run, daemon=True)

    def __enter__(self) -> RunInThread:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.worker.stop()
        self.thread.join(WAIT)
        assert not self.thread.is_alive(), "worker did not stop"


# -- success, retries, dead letters ------------------------------------------


def test_success_records_result_and_counters(mem, clock, reg) -> None:
    @reg.handler("double")
    def double(payload: dict[str, Any]) -> dict[str, Any]:
        return {"value": payload["n"] * 2}

    job = add(mem, clock, "double", payload={"n": 21})
    stats = drain_once(mem, reg)
    done = get(mem, job.id)
    assert done.state is JobState.SUCCEEDED
    assert done.result == {"value": 42}
    assert done.attempts == 1
    assert stats.succeeded == 1 and stats.claimed == 1
    assert mem.counters()[CounterKey("default", "double", "succeeded")] == 1


def test_retries_follow_the_backoff_policy(mem, clock, reg) -> None:
    policy = RetryPolicy(max_attempts=6, base=2.0, cap=10.0)

    @reg.handler("flaky", backoff=policy)
    def flaky(payload: dict[str, Any]) -> None:
        raise RuntimeError("still broken")

    job = add(mem, clock, "flaky", max_attempts=policy.max_attempts)
    worker = make_worker(mem, reg, rng=random.Random(7))
    replica = random.Random(7)  # the same seed draws the same jitter
    delays = []
    for attempt in range(1, policy.max_attempts):
        worker.drain()
        waiting = get(mem, job.id)
        assert waiting.state is JobState.RETRYING
        assert waiting.attempts == attempt
        assert waiting.last_error == "RuntimeError: still broken"
        delay = (waiting.run_at - clock.now()).total_seconds()
        assert 0 <= delay <= policy.ceiling(attempt)
        assert delay == pytest.approx(policy.delay(attempt, replica), abs=1e-6)
        delays.append(delay)
        # Not due yet: a drain now claims nothing.
        if delay > 0.001:
            clock.advance(delay / 2)
            assert worker.drain().claimed == attempt
        clock.set(waiting.run_at)
    worker.close()
    # The ceilings grow 2, 4, 8 then hit the cap of 10.
    assert [policy.ceiling(a) for a in range(1, 6)] == [2.0, 4.0, 8.0, 10.0, 10.0]
    assert len(set(delays)) == len(delays)  # jittered, not lockstep


def test_always_failing_job_is_dead_after_exactly_max_attempts(mem, clock, reg) -> None:
    calls: list[int] = []

    @reg.handler("doomed", max_attempts=4, backoff=(1.0, 5.0))
    def doomed(payload: dict[str, Any], ctx: JobContext) -> None:
        calls.append(ctx.attempt)
        raise ValueError("no")

    job = add(mem, clock, "doomed", max_attempts=4)
    worker = make_worker(mem, reg)
    for _ in range(10):  # more rounds than attempts: the extra ones must find nothing
        worker.drain()
        clock.advance(60)
    worker.close()
    dead = get(mem, job.id)
    assert dead.state is JobState.DEAD
    assert dead.attempts == 4
    assert calls == [1, 2, 3, 4]
    assert dead.finished_at is not None
    totals = {k.event: v for k, v in mem.counters().items() if k.type == "doomed"}
    assert totals == {"enqueued": 1, "failed": 4, "retried": 3, "dead": 1}


def test_permanent_error_goes_straight_to_dead(mem, clock, reg) -> None:
    @reg.handler("bad", max_attempts=5)
    def bad(payload: dict[str, Any]) -> None:
        raise PermanentError("address does not exist")

    job = add(mem, clock, "bad", max_attempts=5)
    drain_once(mem, reg)
    dead = get(mem, job.id)
    assert dead.state is JobState.DEAD
    assert dead.attempts == 1
    assert dead.last_error == "PermanentError: address does not exist"


def test_retry_after_uses_the_requested_delay(mem, clock, reg) -> None:
    @reg.handler("throttled", backoff=(1.0, 2.0))
    def throttled(payload: dict[str, Any], ctx: JobContext) -> str:
        if ctx.attempt == 1:
            raise RetryAfter(42.5, "rate limited")
        return "ok"

    job = add(mem, clock, "throttled")
    worker = make_worker(mem, reg)
    worker.drain()
    waiting = get(mem, job.id)
    assert waiting.state is JobState.RETRYING
    assert waiting.run_at == clock.now() + timedelta(seconds=42.5)  # not the 2 s backoff cap
    assert waiting.last_error == "RetryAfter: rate limited"
    clock.advance(42)
    assert worker.drain().claimed == 1  # the first claim only: not due yet
    clock.advance(0.5)
    worker.drain()
    worker.close()
    assert get(mem, job.id).state is JobState.SUCCEEDED
    assert get(mem, job.id).result == "ok"


def test_retry_after_on_the_last_attempt_is_dead(mem, clock, reg) -> None:
    @reg.handler("throttled")
    def throttled(payload: dict[str, Any]) -> None:
        raise RetryAfter(1)

    job = add(mem, clock, "throttled", max_attempts=1)
    drain_once(mem, reg)
    assert get(mem, job.id).state is JobState.DEAD


# -- what cannot run ---------------------------------------------------------


def test_unknown_job_type_at_run_time_goes_dead(mem, clock, reg) -> None:
    # Enqueued while a handler existed (or by another deployment); none is registered here.
    job = add(mem, clock, "vanished", max_attempts=5)
    drain_once(mem, reg)
    dead = get(mem, job.id)
    assert dead.state is JobState.DEAD
    assert dead.attempts == 1
    assert "no handler for 'vanished'" in (dead.last_error or "")


def test_payload_that_no_longer_parses_goes_dead(mem, clock, reg) -> None:
    from pydantic import BaseModel

    class Model(BaseModel):
        n: int

    @reg.handler("typed", payload=Model)
    def typed(payload: Model) -> int:
        return payload.n

    job = add(mem, clock, "typed", payload={"n": "not a number"})
    drain_once(mem, reg)
    dead = get(mem, job.id)
    assert dead.state is JobState.DEAD
    assert (dead.last_error or "").startswith("invalid payload")


@pytest.mark.parametrize(
    "result",
    [object(), {1, 2}, float("nan"), {"when": time}],
    ids=["object", "set", "nan", "module-in-dict"],
)
def test_non_json_result_goes_dead(mem, clock, reg, result: Any) -> None:
    @reg.handler("weird", max_attempts=5)
    def weird(payload: dict[str, Any]) -> Any:
        return result

    job = add(mem, clock, "weird", max_attempts=5)
    drain_once(mem, reg)
    dead = get(mem, job.id)
    assert dead.state is JobState.DEAD
    assert dead.attempts == 1  # retrying cannot make it serializable
    assert (dead.last_error or "").startswith("result is not JSON")


def test_keys_that_json_writes_as_one_name_send_the_job_dead(mem, clock, reg) -> None:
    """{1: "int", "1": "str"} encodes as two members named "1": stored, a reader kept
    one of them and the other value was lost without a word."""

    @reg.handler("colliding", max_attempts=5)
    def colliding(payload: dict[str, Any]) -> Any:
        return {"outer": {1: "int", "1": "str"}}

    job = add(mem, clock, "colliding", max_attempts=5)
    drain_once(mem, reg)
    dead = get(mem, job.id)
    assert (dead.state, dead.attempts) == (JobState.DEAD, 1)
    assert "two keys of one object become one name in JSON" in (dead.last_error or "")
    assert "'1' appears twice" in (dead.last_error or "")


def test_an_integer_too_long_to_write_is_worded_for_the_handler_s_author(mem, clock, reg) -> None:
    @reg.handler("huge")
    def huge(payload: dict[str, Any]) -> Any:
        return 10**5000

    job = add(mem, clock, "huge")
    drain_once(mem, reg)
    error = get(mem, job.id).last_error or ""
    assert "an integer of more than 4300 digits (return it as a string)" in error
    assert "set_int_max_str_digits" not in error


def test_what_is_stored_is_the_result_as_checked_not_as_changed_later(tmp_path, clock, reg) -> None:
    """A thread the handler left running may change the returned object after the
    worker checked it: a set added then crashed the worker when the store encoded
    the result, and a long string added then went past the size limit."""
    from chalicelib.storage.sqlite import SQLiteStore

    store = SQLiteStore(f"{tmp_path}/late.db", clock=clock)
    returned: list[dict[str, Any]] = []

    @reg.handler("late")
    def late(payload: dict[str, Any]) -> Any:
        out: dict[str, Any] = {"status": "started"}
        returned.append(out)
        return out

    real_finish = store.finish

    def finish_after_a_late_change(completions: Any, *args: Any, **kwargs: Any) -> Any:
        for out in returned:  # what the handler's thread does between check and store
            out["later"] = {1, 2, 3}
            out["big"] = "x" * 1_000_000
        return real_finish(completions, *args, **kwargs)

    store.finish = finish_after_a_late_change  # type: ignore[method-assign]
    try:
        job = add(store, clock, "late")  # type: ignore[arg-type]
        drain_once(store, reg)  # type: ignore[arg-type]
        done = store.get(job.id)
        assert done is not None and done.state is JobState.SUCCEEDED
        assert done.result == {"status": "started"}
    finally:
        store.close()


def test_handler_type_error_is_retried_not_buried(mem, clock, reg) -> None:
    # Only the result's encoding is judged permanent; a TypeError inside the handler is a bug
    # that a deploy may fix, so it retries like any other exception.
    @reg.handler("buggy", max_attempts=3, backoff=(0.0, 0.0))
    def buggy(payload: dict[str, Any]) -> None:
        raise TypeError("Object of type X is not JSON serializable")

    job = add(mem, clock, "buggy", max_attempts=3)
    drain_once(mem, reg)
    dead = get(mem, job.id)
    assert dead.attempts == 3
    assert dead.state is JobState.DEAD


def test_pydantic_model_results_are_stored_as_json(mem, clock, reg) -> None:
    from pydantic import BaseModel

    class Out(BaseModel):
        total: int
        tags: list[str]

    @reg.handler("modelled")
    def modelled(payload: dict[str, Any]) -> Out:
        return Out(total=3, tags=["a"])

    job = add(mem, clock, "modelled")
    drain_once(mem, reg)
    assert get(mem, job.id).result == {"total": 3, "tags": ["a"]}


# -- timeouts ----------------------------------------------------------------


def test_handler_timeout_is_enforced_thread_replaced_and_job_retried(mem, clock, reg, mono) -> None:
    release = threading.Event()
    started: list[int] = []

    @reg.handler("stuck", timeout=0.2, max_attempts=3, backoff=(0.0, 0.0))
    def stuck(payload: dict[str, Any], ctx: JobContext) -> str:
        started.append(ctx.attempt)
        if ctx.attempt == 1:
            mono.advance(0.2)  # its time is up; attempt 2 takes none, so it cannot time out
            release.wait(WAIT)  # ignores ctx.cancelled: its thread stays busy
            return "too late"
        return "second time lucky"

    @reg.handler("quick")
    def quick(payload: dict[str, Any]) -> str:
        return "done"

    job = add(mem, clock, "stuck", max_attempts=3)
    worker = make_worker(mem, reg, concurrency=1)
    try:
        stats = worker.drain()
        # With the only pool thread still stuck in attempt 1, the retry and a new job
        # can only have run on a replacement thread.
        other = add(mem, clock, "quick")
        worker.drain()
    finally:
        release.set()
        worker.close()
    retried = get(mem, job.id)
    assert stats.timed_out == 1
    assert started == [1, 2]
    assert retried.state is JobState.SUCCEEDED
    assert retried.attempts == 2
    assert retried.result == "second time lucky"
    assert get(mem, other.id).state is JobState.SUCCEEDED
    failed = mem.counters()[CounterKey("default", "stuck", "failed")]
    assert failed == 1


def test_timed_out_attempt_records_the_error(mem, clock, reg, mono) -> None:
    @reg.handler("slow", timeout=0.1, max_attempts=1)
    def slow(payload: dict[str, Any], ctx: JobContext) -> None:
        mono.advance(0.1)
        ctx.cancelled.wait(WAIT)  # a well-behaved handler stops when abandoned
        assert ctx.cancelled.is_set()

    job = add(mem, clock, "slow", max_attempts=1)
    stats = drain_once(mem, reg, concurrency=1)
    dead = get(mem, job.id)
    assert stats.timed_out == 1
    assert dead.state is JobState.DEAD
    assert dead.last_error == "timed out after 0.1s"


def test_late_result_of_a_timed_out_attempt_is_discarded(mem, clock, reg, mono) -> None:
    release = threading.Event()
    finished = threading.Event()

    @reg.handler("late", timeout=0.1, max_attempts=1)
    def late(payload: dict[str, Any]) -> str:
        mono.advance(0.1)
        release.wait(WAIT)
        finished.set()
        return "late result"

    job = add(mem, clock, "late", max_attempts=1)
    worker = make_worker(mem, reg, concurrency=1)
    worker.drain()
    release.set()
    assert finished.wait(WAIT)
    worker.drain()
    worker.close()
    dead = get(mem, job.id)
    assert dead.state is JobState.DEAD
    assert dead.result is None


# -- drain(deadline) -----------------------------------------------------------


class ClaimSpy:
    """Wraps a store and records each claim: the worker's (fake) monotonic time when
    it was made and how many jobs it returned. With `step`, each claim then moves that
    clock on: the time the worker spends, as the test decides it."""

    def __init__(self, store: MemoryStore, mono: FakeMonotonic | None = None, step: float = 0):
        self._store = store
        self._mono = mono
        self._step = step
        self.claims: list[tuple[float, int]] = []
        self.due_checks = threading.Event()

    def claim(self, *args: Any, **kwargs: Any) -> list[Job]:
        at = self._mono.monotonic() if self._mono else 0.0
        jobs = self._store.claim(*args, **kwargs)
        self.claims.append((at, len(jobs)))
        if self._mono:
            self._mono.advance(self._step)
        return jobs

    def next_due_at(self, *args: Any, **kwargs: Any) -> Any:
        self.due_checks.set()
        return self._store.next_due_at(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


def test_drain_stops_claiming_when_the_longest_timeout_no_longer_fits(
    mem, clock, reg, mono
) -> None:
    timeout = 5.0

    @reg.handler("chunk", timeout=timeout)
    def chunk(payload: dict[str, Any]) -> None:
        return None

    ids = [add(mem, clock, "chunk").id for _ in range(500)]
    # Each claim costs the worker 0.5 s of its clock; the handlers cost none, so no
    # attempt can time out and only the deadline decides when claiming stops.
    spy = ClaimSpy(mem, mono, step=0.5)
    worker = Worker(spy, reg, WorkerConfig(concurrency=2))
    longest = timeout + DRAIN_MARGIN  # 6 s
    start = mono.monotonic()
    deadline = start + 10.0
    stats = worker.drain(deadline)
    returned = mono.monotonic()
    worker.close()
    states = [get(mem, i).state for i in ids]
    # It claimed at start, +0.5, ... +4.0, while a whole timeout still fitted before the
    # deadline, and not once after (at +4.5 only 5.5 s were left).
    assert [at - start for at, _ in spy.claims] == [0.5 * k for k in range(9)]
    assert all(at + longest <= deadline for at, _ in spy.claims)
    assert all(n > 0 for _, n in spy.claims)  # work was waiting: only the deadline stopped it
    assert returned == start + 4.5 <= deadline
    # Everything it claimed was finished; the rest was left waiting for the next drain.
    assert states.count(JobState.RUNNING) == 0
    assert states.count(JobState.SUCCEEDED) == stats.succeeded == stats.claimed
    assert states.count(JobState.QUEUED) == 500 - stats.claimed > 0


def test_drain_claims_nothing_when_even_one_timeout_does_not_fit(mem, clock, reg, mono) -> None:
    ran: list[str] = []

    @reg.handler("long", timeout=5.0)
    def long(payload: dict[str, Any], ctx: JobContext) -> None:
        ran.append(ctx.job.id)

    job = add(mem, clock, "long")
    worker = make_worker(mem, reg)
    # 5 s timeout + DRAIN_MARGIN: 5.99 s left is too little, 6 s is enough.
    assert worker.drain(mono.monotonic() + 5.0 + DRAIN_MARGIN - 0.01).claimed == 0
    assert get(mem, job.id).state is JobState.QUEUED and ran == []
    assert worker.drain(mono.monotonic() + 5.0 + DRAIN_MARGIN).claimed == 1
    worker.close()
    assert ran == [job.id] and get(mem, job.id).state is JobState.SUCCEEDED


def test_drain_without_deadline_runs_everything_due_and_leaves_the_future(mem, clock, reg) -> None:
    @reg.handler("noop")
    def noop(payload: dict[str, Any]) -> None:
        return None

    due = [add(mem, clock, "noop").id for _ in range(250)]
    later = add(mem, clock, "noop", delay=30).id
    stats = drain_once(mem, reg, concurrency=4, batch_size=16)
    assert stats.succeeded == 250
    assert all(get(mem, i).state is JobState.SUCCEEDED for i in due)
    assert get(mem, later).state is JobState.QUEUED


# -- run(): wake-ups and graceful stop -----------------------------------------


def test_run_wakes_when_a_job_is_added(mem, clock, reg) -> None:
    picked = threading.Event()

    @reg.handler("ping")
    def ping(payload: dict[str, Any]) -> None:
        picked.set()

    spy = ClaimSpy(mem)
    # A fallback poll far longer than the wait below: only the notification can wake it.
    worker = Worker(spy, reg, WorkerConfig(concurrency=2, idle_poll=3600))
    with RunInThread(worker):
        assert spy.due_checks.wait(WAIT), "the worker never went idle"
        add(mem, clock, "ping")
        assert picked.wait(WAIT), "the idle worker was not woken by the new job"


def test_run_wakes_for_each_of_many_jobs_added_one_by_one(mem, clock, reg) -> None:
    seen: list[str] = []
    done = threading.Event()

    @reg.handler("tick")
    def tick(payload: dict[str, Any], ctx: JobContext) -> None:
        seen.append(ctx.job.id)
        done.set()

    worker = make_worker(mem, reg, idle_poll=3600)
    with RunInThread(worker):
        for _ in range(20):
            done.clear()
            add(mem, clock, "tick")
            assert done.wait(WAIT)
    assert len(seen) == 20


def test_run_picks_up_a_delayed_job_when_it_falls_due(mem, reg) -> None:
    # Real clock here: the worker sleeps exactly until run_at, no notification needed.
    from chalicelib.clock import SystemClock

    store = MemoryStore(SystemClock())
    picked = threading.Event()

    @reg.handler("later")
    def later(payload: dict[str, Any]) -> None:
        picked.set()

    worker = Worker(store, reg, WorkerConfig(concurrency=1, idle_poll=3600))
    with RunInThread(worker):
        store.add([new_job(store.clock, "later", delay=0.2)])
        assert picked.wait(WAIT)
    store.close()


def test_stop_finishes_held_jobs_and_claims_no_more(mem, clock, reg) -> None:
    release = threading.Event()
    running = threading.Semaphore(0)

    @reg.handler("hold")
    def hold(payload: dict[str, Any]) -> str:
        running.release()
        release.wait(WAIT)
        return "finished"

    held = [add(mem, clock, "hold").id for _ in range(2)]
    worker = make_worker(mem, reg, concurrency=2)
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    try:
        for _ in held:
            assert running.acquire(timeout=WAIT)
        worker.stop()
        late = add(mem, clock, "hold").id
        assert thread.is_alive()  # it waits for what it holds
    finally:
        release.set()
        thread.join(WAIT)
    assert not thread.is_alive()
    assert [get(mem, i).state for i in held] == [JobState.SUCCEEDED] * 2
    assert get(mem, late).state is JobState.QUEUED
    assert worker.stats.succeeded == 2


def test_stop_before_any_work_returns(mem, clock, reg) -> None:
    worker = make_worker(mem, reg, idle_poll=3600)
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    worker.stop()
    thread.join(WAIT)
    assert not thread.is_alive()


def test_burst_run_exits_when_nothing_is_due(mem, clock, reg) -> None:
    @reg.handler("noop")
    def noop(payload: dict[str, Any]) -> None:
        return None

    for _ in range(5):
        add(mem, clock, "noop")
    worker = make_worker(mem, reg)
    stats = worker.run(burst=True)
    worker.close()
    assert stats.succeeded == 5


# -- leases --------------------------------------------------------------------


def test_long_job_keeps_its_lease_by_extension(mem, clock, reg) -> None:
    release = threading.Event()
    started = threading.Event()

    @reg.handler("long", timeout=WAIT * 3)
    def long(payload: dict[str, Any]) -> str:
        started.set()
        release.wait(WAIT * 2)
        return "kept"

    job = add(mem, clock, "long")
    lease = 0.6  # checked every lease/6 s of real time; extended within lease/2 of expiry
    worker = make_worker(mem, reg, concurrency=1, lease_seconds=lease)
    thread = threading.Thread(target=worker.drain, daemon=True)
    thread.start()
    try:
        assert started.wait(WAIT)
        for _ in range(8):  # 8 x 0.4 s of store time: far past the first lease
            before = get(mem, job.id).lease_expires_at
            assert before is not None
            clock.advance(0.4)  # now within lease/2 of expiry, but not past it
            # Wait (in real time) until the worker extended the lease.
            assert wait_until(lambda: (get(mem, job.id).lease_expires_at or before) > before)  # noqa: B023
            assert mem.claim(1, lease) == []  # nobody else can take it
    finally:
        release.set()
        thread.join(WAIT)
    done = get(mem, job.id)
    assert done.state is JobState.SUCCEEDED
    assert done.attempts == 1
    assert done.result == "kept"


def test_lost_lease_means_the_result_is_not_applied(mem, clock, reg) -> None:
    release = threading.Event()
    started = threading.Event()

    @reg.handler("slowpoke", timeout=WAIT * 3, max_attempts=5)
    def slowpoke(payload: dict[str, Any], ctx: JobContext) -> int:
        started.set()
        if ctx.attempt == 1:
            release.wait(WAIT)
        return ctx.attempt

    job = add(mem, clock, "slowpoke", max_attempts=5)
    worker = make_worker(mem, reg, concurrency=1, lease_seconds=30)
    thread = threading.Thread(target=worker.drain, daemon=True)
    thread.start()
    try:
        assert started.wait(WAIT)
        clock.advance(31)  # the store sees the lease expire before the worker extends it
        [stolen] = mem.claim(1, 30)
        assert stolen.attempts == 2
    finally:
        release.set()
        thread.join(WAIT)
    assert worker.stats.lost_lease == 1
    assert get(mem, job.id).state is JobState.RUNNING  # still the thief's
    assert mem.finish([_success(stolen, 2)]) == [True]
    assert get(mem, job.id).result == 2


def _success(job: Job, result: Any) -> Any:
    from chalicelib.models import Completion

    return Completion(job.id, token(job), JobState.SUCCEEDED, result=result)


# -- process(ids): SQS-style delivery ------------------------------------------


def test_process_runs_exactly_the_given_jobs(mem, clock, reg) -> None:
    @reg.handler("echo")
    def echo(payload: dict[str, Any]) -> dict[str, Any]:
        return payload

    @reg.handler("boom", max_attempts=2, backoff=(5.0, 5.0))
    def boom(payload: dict[str, Any]) -> None:
        raise RuntimeError("boom")

    a = add(mem, clock, "echo", payload={"a": 1})
    b = add(mem, clock, "boom", max_attempts=2)
    untouched = add(mem, clock, "echo")
    later = add(mem, clock, "echo", delay=60)
    missing = "j_" + "0" * 32
    worker = make_worker(mem, reg)
    outcome = worker.process([a.id, b.id, later.id, missing])
    assert outcome == {
        a.id: "succeeded",
        b.id: "retrying",
        later.id: "skipped",
        missing: "skipped",
    }
    assert get(mem, a.id).result == {"a": 1}
    assert get(mem, untouched.id).state is JobState.QUEUED
    # A redelivered message for a finished job is redundant.
    assert worker.process([a.id]) == {a.id: "skipped"}
    clock.advance(5)
    assert worker.process([b.id]) == {b.id: "dead"}
    worker.close()


def test_process_defers_when_the_deadline_is_too_close(mem, clock, reg, mono) -> None:
    @reg.handler("echo", timeout=3.0)
    def echo(payload: dict[str, Any]) -> None:
        return None

    job = add(mem, clock, "echo")
    worker = make_worker(mem, reg)
    too_close = mono.monotonic() + 3.0 + DRAIN_MARGIN - 0.01  # the timeout would not fit
    assert worker.process([job.id], deadline=too_close) == {job.id: "deferred"}
    assert get(mem, job.id).state is JobState.QUEUED
    enough = mono.monotonic() + 3.0 + DRAIN_MARGIN
    assert worker.process([job.id], deadline=enough) == {job.id: "succeeded"}
    worker.close()


# -- sync_finish -----------------------------------------------------------------


def test_sync_finish_writes_each_completion_before_the_next_job(mem, clock, reg) -> None:
    seen_states: list[list[JobState]] = []
    ids: list[str] = []

    @reg.handler("step")
    def step(payload: dict[str, Any], ctx: JobContext) -> None:
        # When job k runs, jobs 0..k-1 are already recorded in the store.
        seen_states.append([get(mem, i).state for i in ids[: payload["k"]]])

    ids.extend(add(mem, clock, "step", payload={"k": k}, priority=-k).id for k in range(30))
    drain_once(mem, reg, concurrency=1, sync_finish=True)
    assert len(seen_states) == 30
    assert all(states == [JobState.SUCCEEDED] * len(states) for states in seen_states)


def test_long_jobs_are_not_claimed_ahead_so_another_worker_can_run_them(mem, clock, reg) -> None:
    """Was: a new worker assumed its jobs short and claimed two per thread; given 4 jobs
    of 15 s at concurrency 2 it held all 4 `running` (2 in its inbox, their attempt
    spent) while a second worker stood idle, and the 4 took 30 s instead of 15."""
    release = threading.Event()
    started: list[str] = []

    @reg.handler("long", timeout=WAIT * 3)
    def long(payload: dict[str, Any], ctx: JobContext) -> None:
        started.append(ctx.job.id)
        release.wait(WAIT)

    ids = [add(mem, clock, "long").id for _ in range(4)]
    first, second = (make_worker(mem, reg, concurrency=2) for _ in range(2))
    runners = [threading.Thread(target=w.drain, daemon=True) for w in (first, second)]
    try:
        runners[0].start()
        assert wait_until(lambda: len(started) == 2)
        time.sleep(0.3)  # dispatcher turns in which a claim ahead would happen
        states = [get(mem, i).state for i in ids]
        assert states.count(JobState.RUNNING) == 2 and states.count(JobState.QUEUED) == 2
        runners[1].start()
        assert wait_until(lambda: len(started) == 4)  # the second worker runs the rest
    finally:
        release.set()
        for runner in runners:
            runner.join(WAIT)
        first.close()
        second.close()
    assert sorted(started) == sorted(ids)
    assert all(get(mem, i).state is JobState.SUCCEEDED for i in ids)
    assert first._depth() == 1  # what it timed was long: still no claims ahead
    first._busy_seconds = 0.001  # after a run of quick jobs it claims ahead again
    assert first._depth() > 1


def test_prefetched_jobs_keep_their_leases_and_a_lost_one_is_not_started(mem, clock, reg) -> None:
    release = threading.Event()
    started = threading.Event()
    ran: list[str] = []

    @reg.handler("first", timeout=WAIT * 3, priority=1)
    def first(payload: dict[str, Any]) -> None:
        started.set()
        release.wait(WAIT)

    @reg.handler("queued")
    def queued(payload: dict[str, Any], ctx: JobContext) -> None:
        ran.append(ctx.job.id)

    blocker = add(mem, clock, "first", priority=1)
    waiting = add(mem, clock, "queued")
    lease = 0.6
    worker = make_worker(mem, reg, concurrency=1, lease_seconds=lease)
    worker._busy_seconds = 0.001  # as after a run of quick jobs: it claims ahead
    thread = threading.Thread(target=worker.drain, daemon=True)
    thread.start()
    try:
        assert started.wait(WAIT)
        # The only pool thread is busy; the second job was claimed into the inbox.
        assert wait_until(lambda: get(mem, waiting.id).state is JobState.RUNNING)
        before = get(mem, waiting.id).lease_expires_at
        assert before is not None
        clock.advance(0.4)
        assert wait_until(lambda: (get(mem, waiting.id).lease_expires_at or before) > before)
        # Now let the waiting job's lease lapse before the worker can extend it again.
        clock.advance(lease + 1)
        [stolen] = mem.claim(1, 60, ids=[waiting.id])
        assert stolen.attempts == 1  # never started here: the lapse gave its attempt back
    finally:
        release.set()
        thread.join(WAIT)
    assert not thread.is_alive()
    assert ran == []  # never started here: another worker owns it now
    assert get(mem, waiting.id).lease_token == stolen.lease_token
    # The blocker's lease lapsed in the same jump: its late finish was refused, and the
    # drain ran it again as attempt 2.
    assert worker.stats.lost_lease == 2
    assert (get(mem, blocker.id).state, get(mem, blocker.id).attempts) == (JobState.SUCCEEDED, 2)


# -- the notifiers behind run()'s wake-ups -----------------------------------------


def test_local_notifier_never_loses_a_wake_up_between_waits() -> None:
    from chalicelib.storage.notify import LocalNotifier

    notifier = LocalNotifier()
    notifier.notify()  # before subscribing: not counted
    assert notifier.wait(0) is False  # subscribes this thread
    notifier.notify()  # sent while "busy", not waiting
    assert notifier.wait(WAIT) is True  # returns at once
    assert notifier.wait(0) is False  # consumed
    got: list[bool] = []
    subscribed = threading.Event()

    def waiter_thread() -> None:
        got.append(notifier.wait(0))  # subscribes the waiter
        subscribed.set()
        got.append(notifier.wait(WAIT))

    waiter = threading.Thread(target=waiter_thread)
    waiter.start()
    assert subscribed.wait(WAIT)
    # Notify once it is blocked in the condition's wait (a notification sent just
    # before that would return at once as well: never lost either way).
    assert wait_until(lambda: len(notifier._cond._waiters) == 1)  # type: ignore[attr-defined]
    notifier.notify()
    waiter.join(WAIT)
    assert got == [False, True]


def test_socket_notifier_wakes_another_instance_and_drops_dead_peers(tmp_path) -> None:
    import socket

    from chalicelib.storage.notify import SocketDirNotifier

    directory = str(tmp_path / "wake")
    waiter = SocketDirNotifier(directory)
    sender = SocketDirNotifier(directory)
    try:
        assert waiter.wait(0) is False  # binds its socket: now it can be woken
        # A worker that died without cleaning up leaves a socket file nobody reads.
        dead_path = str(tmp_path / "wake" / "999999-dead.sock")
        dead = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        dead.bind(dead_path)
        dead.close()
        sender.notify()
        assert waiter.wait(WAIT) is True
        assert waiter.wait(0) is False  # drained
        assert not os.path.exists(dead_path)
        waiter.interrupt()  # wakes only itself, no lock: safe in a signal handler
        assert waiter.wait(WAIT) is True
    finally:
        waiter.close()
        sender.close()
    assert os.listdir(directory) == []


class _OverlapProbe(MemoryStore):
    """A store that takes concurrent writes and records whether a finish ever ran
    while a claim was in progress."""

    concurrent_writes = True

    def __init__(self, clock: FakeClock) -> None:
        super().__init__(clock)
        self.claiming = threading.Event()
        self.overlapped = 0
        self.threads: set[str] = set()

    def claim(self, *args: Any, **kwargs: Any) -> list[Job]:
        self.claiming.set()
        try:
            time.sleep(0.01)  # give a concurrent finish time to run inside the claim
            return super().claim(*args, **kwargs)
        finally:
            self.claiming.clear()

    def finish(self, completions: Any) -> list[bool]:
        self.threads.add(threading.current_thread().name)
        if self.claiming.wait(0.5):
            self.overlapped += 1
        return super().finish(completions)


def test_completions_are_written_while_the_next_claim_runs(clock: FakeClock, reg: Registry) -> None:
    store = _OverlapProbe(clock)
    reg.handler("noop")(lambda payload: None)
    jobs = [add(store, clock, "noop") for _ in range(200)]
    stats = drain_once(store, reg, concurrency=2, batch_size=10)
    assert stats.succeeded == 200
    assert all(get(store, j.id).state is JobState.SUCCEEDED for j in jobs)
    assert store.overlapped > 0
    assert all(name.startswith("spool-flush") for name in store.threads)


def test_stores_without_concurrent_writes_flush_on_the_dispatcher(
    mem: MemoryStore, reg: Registry, clock: FakeClock
) -> None:
    finished_on: set[str] = set()
    real_finish = mem.finish

    def finish(completions: Any) -> list[bool]:
        finished_on.add(threading.current_thread().name)
        return real_finish(completions)

    mem.finish = finish  # type: ignore[method-assign]
    reg.handler("noop")(lambda payload: None)
    for _ in range(50):
        add(mem, clock, "noop")
    assert drain_once(mem, reg, batch_size=10).succeeded == 50
    assert finished_on == {threading.current_thread().name}


class GapStore(ClaimSpy):
    """Holds the dispatcher inside its idle-timeout query (next_due_at) until the job it
    claimed has finished and its completion sits in the worker's outbox: the pool
    thread's wake-up then finds no dispatcher waiting. That is the gap in which a
    completion used to be left `running` until the idle poll."""

    def __init__(self, store: MemoryStore, started: threading.Event, release: threading.Event):
        super().__init__(store)
        self.worker: Worker | None = None
        self.claimed = False
        self.gated = threading.Event()
        self._started = started
        self._release = release

    def claim(self, *args: Any, **kwargs: Any) -> list[Job]:
        jobs = super().claim(*args, **kwargs)
        self.claimed = self.claimed or bool(jobs)
        return jobs

    def next_due_at(self, *args: Any, **kwargs: Any) -> Any:
        if self.claimed and not self.gated.is_set():
            assert self.worker is not None
            worker = self.worker
            assert self._started.wait(WAIT), "the claimed job never started"
            self._release.set()
            assert wait_until(lambda: bool(worker._state.outbox)), "no completion arrived"
            self.gated.set()
        return super().next_due_at(*args, **kwargs)


@pytest.mark.parametrize("flush_delay", [0.002, 3600.0])
def test_completion_landing_while_the_dispatcher_plans_its_sleep_is_not_lost(
    mem, clock, reg, flush_delay: float
) -> None:
    """Deterministic: the completion is forced into the gap between the dispatcher's
    last look at the outbox and its wait. Both the idle poll and the handler's timeout
    are an hour, so only a wake-up that survives the gap finishes the job in time. With
    an hour's flush_delay too: nothing else is in flight, so there is nothing to batch
    the result with and it is written at once."""
    started, release = threading.Event(), threading.Event()

    @reg.handler("quick", timeout=3600)
    def quick(payload: dict[str, Any]) -> str:
        started.set()
        assert release.wait(WAIT)
        return "done"

    job = add(mem, clock, "quick")
    gap = GapStore(mem, started, release)
    config = WorkerConfig(concurrency=2, idle_poll=3600, flush_delay=flush_delay)
    worker = Worker(gap, reg, config)
    gap.worker = worker
    with RunInThread(worker):
        assert gap.gated.wait(WAIT), "the dispatcher never planned an idle sleep"
        assert wait_until(lambda: get(mem, job.id).state is JobState.SUCCEEDED), (
            "the completion that landed in the gap was not written: the worker slept "
            "through its wake-up"
        )


def test_drain_ends_only_when_a_claim_finds_nothing(mem, clock, reg) -> None:
    """A step can skip its claim because the pool is full; if those jobs then finish
    and are written before the idle check (the flusher thread on Postgres), the worker
    looks idle with jobs still queued. Here the first step skips its claim outright."""

    @reg.handler("noop")
    def noop(payload: dict[str, Any]) -> None:
        return None

    due = [add(mem, clock, "noop").id for _ in range(40)]
    worker = Worker(mem, reg, WorkerConfig(concurrency=4, batch_size=16))
    real_step = worker._step
    skipped: list[int] = []

    def step(depth_limit: int, hold_wave: bool = False) -> int:
        if not skipped:
            skipped.append(depth_limit)
            return 0  # what a step that found no room returns, with nothing in flight now
        return real_step(depth_limit, hold_wave)

    worker._step = step  # type: ignore[method-assign]
    try:
        stats = worker.drain()
    finally:
        worker.close()
    assert skipped
    assert stats.succeeded == 40
    assert all(get(mem, i).state is JobState.SUCCEEDED for i in due)

"""What a black-box chaos run found the worker doing wrong, each pinned down here.

- A handler raising a BaseException that is not an Exception (SystemExit,
  KeyboardInterrupt, its own class) killed the pool thread: the job sat
  `running` until its timeout and was recorded as timed out, its error lost.
- A result nested 100,000 deep, or holding itself, killed it the same way
  (RecursionError, or a NaN check that never ended).
- Anything else escaping Spool's own code around an attempt (a middleware)
  killed it too.
- A timed-out job under a concurrency limit freed its slot while its handler
  still ran, so the next attempt ran beside it: the limit was broken.
- Outcomes a store outage kept from being written were logged as lost leases.
- (Docs) a hard-killed worker's prefetched jobs come back with an attempt spent.

The store is the memory store on a FakeClock and the worker's monotonic clock is
the test's (`mono`), so no handler times out unless the test says so. A bug that
kills a pool thread leaves a drain waiting forever: `drained` runs it on a thread
of its own and fails the test instead, and `deaths` records any thread that died.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from datetime import timedelta
from typing import Any

import pytest

from chalicelib.errors import StoreUnavailable
from chalicelib.handlers import JobContext
from chalicelib.job_events import JobEvents
from chalicelib.jsonstrict import is_circular, is_finite_json
from chalicelib.limits import ClaimPolicy, Limit, Rate
from chalicelib.middleware import Middleware
from chalicelib.models import Job, JobState
from chalicelib.retry import RetryPolicy
from chalicelib.storage.memory import MemoryStore
from chalicelib.timebounds import MAX_DELAY
from chalicelib.worker import Worker, WorkerConfig, WorkerStats, _Attempt
from tests.factories import stored
from tests.test_worker import WAIT, ClaimSpy, FakeMonotonic, RunInThread, add, get, wait_until

LEASE = 30.0


@pytest.fixture
def mono(monkeypatch: pytest.MonkeyPatch) -> FakeMonotonic:
    """The worker's monotonic clock, moved only by the test."""
    import chalicelib.worker as worker_module

    fake = FakeMonotonic()
    monkeypatch.setattr(worker_module, "time", fake)
    return fake


@pytest.fixture
def deaths(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Threads that died of an exception during the test (SystemExit included,
    which the default hook would swallow without a word)."""
    died: list[str] = []

    def hook(args: threading.ExceptHookArgs) -> None:
        name = args.thread.name if args.thread is not None else "?"
        died.append(f"{name}: {args.exc_type.__name__}")

    monkeypatch.setattr(threading, "excepthook", hook)
    return died


def drained(worker: Worker) -> WorkerStats:
    """worker.drain(), failing the test if it does not return: with a dead pool thread
    its job never finishes and the drain waits for it forever."""
    result: list[WorkerStats] = []
    thread = threading.Thread(target=lambda: result.append(worker.drain()), daemon=True)
    thread.start()
    thread.join(WAIT)
    assert not thread.is_alive(), "the drain hung: a job it held never finished"
    return result[0]


def history(store: MemoryStore, job_id: str) -> list[tuple[int, str, str | None, str | None]]:
    return [(a.number, a.outcome, a.error_type, a.error) for a in store.attempts(job_id) or []]


# -- 1. BaseExceptions from a handler ------------------------------------------------


class Boom(BaseException):
    """An exception class that is not an Exception, as some libraries define."""


@pytest.mark.parametrize(
    "raised, error",
    [
        (SystemExit(3), "SystemExit: 3"),
        (KeyboardInterrupt(), "KeyboardInterrupt"),
        (Boom("kaboom"), "Boom: kaboom"),
    ],
    ids=["SystemExit", "KeyboardInterrupt", "Boom"],
)
def test_a_base_exception_from_a_handler_is_a_failed_attempt_and_the_thread_lives(
    mem, clock, reg, mono, deaths, raised: BaseException, error: str
) -> None:
    threads: set[int] = set()

    @reg.handler("exits", max_attempts=2, backoff=(5.0, 5.0))
    def exits(payload: dict[str, Any]) -> None:
        threads.add(threading.get_ident())
        raise raised

    @reg.handler("fine")
    def fine(payload: dict[str, Any]) -> str:
        threads.add(threading.get_ident())
        return "ok"

    job = add(mem, clock, "exits", max_attempts=2)
    worker = Worker(mem, reg, WorkerConfig(concurrency=1), rng=random.Random(3))
    try:
        first = drained(worker)
        waiting = get(mem, job.id)
        assert (waiting.state, waiting.attempts, waiting.last_error) == (
            JobState.RETRYING,
            1,
            error,
        )
        assert 0 <= (waiting.run_at - clock.now()).total_seconds() <= 5.0  # the backoff
        clock.set(waiting.run_at)
        drained(worker)
        other = add(mem, clock, "fine")
        drained(worker)  # with the only pool thread dead, this one would never run
    finally:
        worker.close()
    assert first.timed_out == 0
    assert (get(mem, job.id).state, get(mem, job.id).attempts) == (JobState.DEAD, 2)
    name, message = type(raised).__name__, str(raised) or error
    assert history(mem, job.id) == [(1, "retrying", name, message), (2, "dead", name, message)]
    assert get(mem, other.id).state is JobState.SUCCEEDED
    assert len(threads) == 1, "every attempt ran on the one pool thread"
    assert deaths == []


def test_the_main_thread_still_lets_ctrl_c_through(mem, clock, reg) -> None:
    """Pool threads get no signals; the main thread does, and there a KeyboardInterrupt
    is the operator's: execute() must not turn it into a failed attempt."""

    @reg.handler("interrupted")
    def interrupted(payload: dict[str, Any]) -> None:
        raise KeyboardInterrupt

    add(mem, clock, "interrupted")
    [job] = mem.claim(1, LEASE)
    attempt = _Attempt(job, reg.get("interrupted"), ctx=JobContext(job, float("inf")))
    worker = Worker(mem, reg, WorkerConfig(concurrency=1))
    try:
        with pytest.raises(KeyboardInterrupt):
            worker.execute(attempt)
    finally:
        worker.close()


# -- 2. Results no encoder can write -------------------------------------------------


def deep_list(levels: int) -> list[Any]:
    top: list[Any] = []
    inner = top
    for _ in range(levels):
        inner.append([])
        inner = inner[0]
    return top


def deep_dict(levels: int) -> dict[str, Any]:
    top: dict[str, Any] = {}
    inner = top
    for _ in range(levels):
        inner["in"] = {}
        inner = inner["in"]
    return top


def self_holding_dict() -> dict[str, Any]:
    result: dict[str, Any] = {"ok": True}
    result["me"] = result
    return result


def self_holding_list_with_nan() -> list[Any]:
    result: list[Any] = [float("nan")]
    result.append({"back": result})
    return result


CIRCULAR = "result is not JSON: an array or object in it contains itself (a circular reference)"
TOO_DEEP = "result is not JSON: its arrays and objects are nested too deeply"


@pytest.mark.parametrize(
    "build, error",
    [
        (lambda: deep_list(100_000), TOO_DEEP),
        (lambda: deep_dict(100_000), TOO_DEEP),
        # Deep enough to encode on a pool thread but not to read back on the API's
        # deeper stack: past the 200 levels a payload may have.
        (lambda: deep_list(900), TOO_DEEP + " (more than 200)"),
        (lambda: {"a": deep_dict(199)}, TOO_DEEP + " (more than 200)"),
        (self_holding_dict, CIRCULAR),
        (self_holding_list_with_nan, CIRCULAR),
    ],
    ids=["deep-list", "deep-dict", "deep-900", "deep-201", "circular-dict", "circular-with-nan"],
)
def test_a_result_too_deep_or_holding_itself_is_dead_with_the_reason(
    mem, clock, reg, mono, deaths, build: Any, error: str
) -> None:
    @reg.handler("odd", max_attempts=3)
    def odd(payload: dict[str, Any]) -> Any:
        return build()

    @reg.handler("fine")
    def fine(payload: dict[str, Any]) -> str:
        return "ok"

    job = add(mem, clock, "odd", max_attempts=3)
    worker = Worker(mem, reg, WorkerConfig(concurrency=1))
    try:
        stats = drained(worker)
        other = add(mem, clock, "fine")
        drained(worker)
    finally:
        worker.close()
    dead = get(mem, job.id)
    assert (dead.state, dead.attempts, dead.last_error) == (JobState.DEAD, 1, error)
    assert dead.result is None
    assert stats.timed_out == 0
    assert get(mem, other.id).state is JobState.SUCCEEDED
    assert deaths == []


@pytest.mark.parametrize(
    "result",
    [deep_list(199), {"a": deep_dict(198)}, [[[]] for _ in range(5000)]],
    ids=["200-levels-list", "200-levels-dict", "many-brackets-shallow"],
)
def test_a_result_of_200_levels_or_of_many_shallow_lists_is_stored(
    mem, clock, reg, mono, deaths, result: Any
) -> None:
    @reg.handler("nested")
    def nested(payload: dict[str, Any]) -> Any:
        return result

    job = add(mem, clock, "nested")
    worker = Worker(mem, reg, WorkerConfig(concurrency=1))
    try:
        drained(worker)
    finally:
        worker.close()
    assert get(mem, job.id).state is JobState.SUCCEEDED


def test_the_json_checks_answer_for_any_depth_and_for_cycles() -> None:
    shared = [1.0]
    assert is_finite_json(deep_list(100_000)) and not is_circular(deep_list(100_000))
    assert is_finite_json(self_holding_dict()) and is_circular(self_holding_dict())
    assert not is_finite_json(self_holding_list_with_nan())
    assert not is_circular([shared, shared, {"again": shared}, (shared,)])  # shared, no cycle
    assert is_circular([shared, [shared, {"deep": [shared]}]]) is False
    looped: list[Any] = [shared]
    looped.append((1, {"x": [looped]}))
    assert is_circular(looped)
    assert not is_finite_json({"a": [1, (2.0, float("inf"))]})


# -- 3. Spool's own code failing around an attempt -----------------------------------


class FailsOnce(Middleware):
    """A middleware (metrics, tracing) whose hook breaks on the first attempt."""

    def __init__(self, raised: BaseException) -> None:
        self.raised: BaseException | None = raised

    def before_attempt(self, job: Job) -> None:
        raised, self.raised = self.raised, None
        if raised is not None:
            raise raised


@pytest.mark.parametrize(
    "raised, error",
    [(RuntimeError("tracer is down"), "RuntimeError: tracer is down"), (Boom("x"), "Boom: x")],
    ids=["Exception", "BaseException"],
)
def test_an_error_in_the_worker_itself_fails_the_attempt_not_the_thread(
    mem, clock, reg, mono, deaths, caplog, raised: BaseException, error: str
) -> None:
    threads: set[int] = set()

    @reg.handler("work", max_attempts=3, backoff=(1.0, 1.0))
    def work(payload: dict[str, Any]) -> str:
        threads.add(threading.get_ident())
        return "done"

    job = add(mem, clock, "work", max_attempts=3)
    worker = Worker(mem, reg, WorkerConfig(concurrency=1), middleware=[FailsOnce(raised)])
    try:
        with caplog.at_level(logging.ERROR, logger="spool.worker"):
            stats = drained(worker)
        failed = get(mem, job.id)
        clock.set(failed.run_at)
        drained(worker)
    finally:
        worker.close()
    assert (failed.state, failed.attempts) == (JobState.RETRYING, 1)
    assert failed.last_error == f"worker error: {error}"
    [(number, outcome, error_type, _)] = history(mem, job.id)[:1]
    assert (number, outcome, error_type) == (1, "retrying", type(raised).__name__)
    [attempt] = (mem.attempts(job.id) or [])[:1]
    assert attempt.traceback is not None and "before_attempt" in attempt.traceback
    logged = [r for r in caplog.records if r.name == "spool.worker" and job.id in r.getMessage()]
    assert len(logged) == 1 and logged[0].exc_info is not None  # once, with its traceback
    assert stats.timed_out == 0
    assert (get(mem, job.id).state, get(mem, job.id).result) == (JobState.SUCCEEDED, "done")
    assert len(threads) == 1 and deaths == []


def test_a_huge_backoff_is_held_to_the_delay_bound_and_the_worker_lives_on(
    mem, clock, reg, deaths
) -> None:
    """backoff=(1e12, 1e12) put the retry thousands of years out, or overflowed the
    datetime in the pool thread: the worker died with the job running, and the other
    jobs never started."""

    @reg.handler("flaky", max_attempts=3, backoff=(1e12, 1e12))
    def flaky(payload: dict[str, Any]) -> None:
        raise RuntimeError("upstream down")

    reg.handler("fine")(lambda payload: "ok")
    job = add(mem, clock, "flaky", max_attempts=3)
    others = [add(mem, clock, "fine") for _ in range(5)]
    worker = Worker(mem, reg, WorkerConfig(concurrency=2), rng=random.Random(7))
    try:
        drained(worker)
    finally:
        worker.close()
    retried = get(mem, job.id)
    assert (retried.state, retried.attempts) == (JobState.RETRYING, 1)
    assert retried.last_error == "RuntimeError: upstream down"
    assert clock.now() < retried.run_at <= clock.now() + MAX_DELAY
    assert all(get(mem, o.id).state is JobState.SUCCEEDED for o in others)
    assert deaths == []


class BrokenBackoff(RetryPolicy):
    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        raise ArithmeticError("no delay today")


def test_a_backoff_that_fails_retries_at_once_instead_of_failing_the_attempts_record(
    mem, clock, reg, deaths, caplog
) -> None:
    """_failed's fallback built a retry without retry_at, which a Completion refuses:
    the attempt was then recorded as a timeout although the handler raised at once."""

    @reg.handler("flaky", backoff=BrokenBackoff(max_attempts=3))
    def flaky(payload: dict[str, Any]) -> None:
        raise RuntimeError("upstream down")

    job = add(mem, clock, "flaky", max_attempts=3)
    worker = Worker(mem, reg, WorkerConfig(concurrency=1))
    try:
        with caplog.at_level(logging.ERROR, logger="spool.worker"):
            stats = drained(worker)
    finally:
        worker.close()
    # Retried at once, each try spending an attempt, so the drain ran all three.
    done = get(mem, job.id)
    assert (done.state, done.attempts) == (JobState.DEAD, 3)
    assert done.last_error == "RuntimeError: upstream down"
    assert [outcome for _, outcome, _, _ in history(mem, job.id)] == [
        "retrying",
        "retrying",
        "dead",
    ]
    assert stats.timed_out == 0 and deaths == []
    assert any("could not work out when to retry" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize(
    "backoff",
    [(float("inf"), 1.0), (1.0, float("nan")), (-1.0, 5.0), (True, 5.0), ("1", 5.0)],
    ids=str,
)
def test_a_backoff_that_is_not_a_finite_number_of_seconds_is_refused_at_registration(
    reg, backoff: tuple[Any, Any]
) -> None:
    with pytest.raises(ValueError, match=r"backoff (base|cap) must be"):
        reg.handler("flaky", backoff=backoff)


@pytest.mark.parametrize("timeout", [float("nan"), float("inf"), 0, -1])
def test_a_timeout_that_is_not_a_positive_finite_number_is_refused(reg, timeout: float) -> None:
    with pytest.raises(ValueError, match="timeout must be a positive, finite number"):
        reg.handler("slow", timeout=timeout)


# -- 4. Timeouts under a concurrency limit -------------------------------------------


class Overlap:
    """Counts a handler's attempts running at once, as the chaos run did."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.running = 0
        self.peak = 0
        self.starts: list[int] = []

    def __enter__(self) -> None:
        with self._lock:
            self.running += 1
            self.peak = max(self.peak, self.running)

    def __exit__(self, *exc: object) -> None:
        with self._lock:
            self.running -= 1


@pytest.mark.parametrize(
    "limit",
    [Limit("type", "gated", concurrency=1), Limit("queue", "slow", concurrency=1)],
    ids=["type-limit", "queue-limit"],
)
def test_a_timed_out_job_keeps_its_concurrency_slot_until_its_handler_returns(
    mem, clock, reg, mono, limit: Limit
) -> None:
    overlap = Overlap()
    abandoned, release = threading.Event(), threading.Event()

    @reg.handler("gated", timeout=1, max_attempts=2, backoff=(0.0, 0.0), queue="slow")
    def gated(payload: dict[str, Any], ctx: JobContext) -> str:
        overlap.starts.append(ctx.attempt)
        with overlap:
            if ctx.attempt == 1:
                mono.advance(1.0)  # its time is up
                if ctx.cancelled.wait(WAIT):
                    abandoned.set()
                release.wait(WAIT)  # but it runs on, as a handler stuck in a call would
            return "ok"

    job = add(mem, clock, "gated", queue="slow", max_attempts=2)
    policy = ClaimPolicy((limit,))
    worker = Worker(mem, reg, WorkerConfig(concurrency=4, lease_seconds=LEASE, policy=policy))
    try:
        stats = drained(worker)
        assert abandoned.wait(WAIT)
        held = get(mem, job.id)
        # Timed out and cancelled, but still `running`: its slot is not free, so the
        # retry (due at once) was not started beside it.
        assert (held.state, held.attempts, stats.timed_out) == (JobState.RUNNING, 1, 1)
        assert history(mem, job.id) == []
        # Its lease is kept alive meanwhile.
        clock.advance(LEASE * 2 / 3)
        mono.advance(LEASE / 6 + 5)  # the dispatcher's next lease check is due
        drained(worker)
        assert get(mem, job.id).lease_expires_at == clock.now() + timedelta(seconds=LEASE)
        assert (get(mem, job.id).state, overlap.starts) == (JobState.RUNNING, [1])
        release.set()
        assert wait_until(lambda: not worker._state.lingering), "the handler never returned"
        drained(worker)  # writes the timeout, which frees the slot for attempt 2
    finally:
        release.set()
        worker.close()
    done = get(mem, job.id)
    assert (done.state, done.attempts, done.result) == (JobState.SUCCEEDED, 2, "ok")
    assert overlap.starts == [1, 2] and overlap.peak == 1
    assert history(mem, job.id) == [
        (1, "retrying", "TimeoutError", "timed out after 1s (the handler returned after 11.0s)"),
        (2, "succeeded", None, None),
    ]
    [first] = (mem.attempts(job.id) or [])[:1]
    assert first.traceback is not None and "in gated" in first.traceback  # where it was stuck


def test_a_held_timeout_is_written_when_the_worker_stops(mem, clock, reg, mono) -> None:
    abandoned, release = threading.Event(), threading.Event()

    @reg.handler("gated", timeout=1, max_attempts=1, concurrency=1)
    def gated(payload: dict[str, Any], ctx: JobContext) -> None:
        mono.advance(1.0)
        if ctx.cancelled.wait(WAIT):
            abandoned.set()
        release.wait(WAIT)  # still running when the worker stops

    job = add(mem, clock, "gated", max_attempts=1)
    policy = ClaimPolicy(reg.limits())
    worker = Worker(mem, reg, WorkerConfig(concurrency=2, policy=policy, idle_poll=0.05))
    try:
        with RunInThread(worker):
            assert abandoned.wait(WAIT)
            assert get(mem, job.id).state is JobState.RUNNING
    finally:
        release.set()
    dead = get(mem, job.id)
    assert dead.state is JobState.DEAD
    assert dead.last_error == (
        "timed out after 1s (the handler was still running after 1.0s when the worker stopped)"
    )
    assert worker.stats.timed_out == 1 and worker.stats.dead == 1


def test_a_timeout_without_a_concurrency_limit_is_recorded_at_once(mem, clock, reg, mono) -> None:
    """A rate limit counts starts, not running jobs: nothing to hold, today's behaviour."""
    release = threading.Event()

    @reg.handler("paced", timeout=1, max_attempts=1, rate="100/s")
    def paced(payload: dict[str, Any]) -> None:
        mono.advance(1.0)
        release.wait(WAIT)

    job = add(mem, clock, "paced", max_attempts=1)
    policy = ClaimPolicy((Limit("type", "paced", rate=Rate(100, 1.0)),))
    worker = Worker(mem, reg, WorkerConfig(concurrency=1, policy=policy))
    try:
        drained(worker)
        # Recorded while the handler is still stuck.
        assert get(mem, job.id).last_error == "timed out after 1s"
        assert get(mem, job.id).state is JobState.DEAD
    finally:
        release.set()
        worker.close()


@pytest.mark.parametrize("fair", [False, True])
def test_under_a_rate_limit_no_job_is_claimed_that_cannot_start_at_once(
    mem, clock, reg, fair: bool
) -> None:
    """The store counts a rate limit's start when it hands the job out. Jobs claimed
    ahead of the pool started later, beside the next window's: 10 started in under a
    second under "5/s". Under a rate limit the worker holds no more than its threads."""

    release = threading.Event()
    started: list[str] = []

    @reg.handler("rated", rate="1000/s")
    def rated(payload: dict[str, Any]) -> None:
        started.append("x")
        release.wait(WAIT)

    for _ in range(20):
        add(mem, clock, "rated")
    policy = ClaimPolicy((Limit("type", "rated", rate=Rate(1000, 1.0)),), fair=fair)
    worker = Worker(mem, reg, WorkerConfig(concurrency=2, policy=policy))
    try:
        with RunInThread(worker):
            assert wait_until(lambda: len(started) == 2)
            time.sleep(0.3)  # dispatcher turns in which a prefetch would claim more
            running = sum(n for (_, state), n in mem.counts().items() if state is JobState.RUNNING)
            assert running == 2
            release.set()
            assert wait_until(lambda: len(started) == 20)
    finally:
        release.set()
        worker.close()


class LeaseGone(ClaimSpy):
    """Every lease extension is refused: the lease lapsed and another worker took the job."""

    def extend_lease(self, *args: Any, **kwargs: Any) -> bool:
        return False

    def extend_leases(self, leases: Any, lease_seconds: float) -> list[bool]:
        return [False for _ in leases]


def test_a_handler_whose_lease_is_lost_is_told_to_stop(mem, clock, reg) -> None:
    """A worker stalled past its lease (SIGSTOP, a long GC) finds on resuming that its
    job is another worker's now: its handler is cancelled, not left to run beside it."""
    told = threading.Event()

    lease = 1.2  # looked at every lease/6 s, renewed when two thirds are left

    @reg.handler("long", timeout=60)
    def long(payload: dict[str, Any], ctx: JobContext) -> None:
        clock.advance(0.7)  # due for renewal (still the store's: nobody reclaims it)
        if ctx.cancelled.wait(WAIT):
            told.set()

    add(mem, clock, "long")
    config = WorkerConfig(concurrency=1, lease_seconds=lease)
    worker = Worker(LeaseGone(mem), reg, config)
    try:
        with RunInThread(worker):
            assert told.wait(WAIT)
    finally:
        worker.close()


class LeaseOutage(ClaimSpy):
    """The first lease renewal finds the store unavailable; later ones go through."""

    def __init__(self, store: MemoryStore) -> None:
        super().__init__(store)
        self.refused = 0

    def extend_leases(self, *args: Any, **kwargs: Any) -> list[bool]:
        if not self.refused:
            self.refused += 1
            raise StoreUnavailable("the database connection failed; try again shortly")
        return list(self._store.extend_leases(*args, **kwargs))


def test_a_store_outage_while_renewing_leases_does_not_end_an_sqs_wave(
    mem, clock, reg, caplog
) -> None:
    """process() (the SQS handler's wave) renews its jobs' leases as they run. A renewal
    that found the store down raised out of process(), which returned with the handler
    still running: on Lambda the container froze mid-job and the job ran a second time."""
    release = threading.Event()
    lease = 1.2  # looked at every lease/6 s, renewed when two thirds are left

    @reg.handler("long", timeout=60)
    def long(payload: dict[str, Any]) -> str:
        clock.advance(0.7)  # due for renewal
        release.wait(WAIT)
        return "done"

    job = add(mem, clock, "long")
    store = LeaseOutage(mem)
    worker = Worker(store, reg, WorkerConfig(concurrency=1, lease_seconds=lease))
    outcome: dict[str, str] = {}
    wave = threading.Thread(target=lambda: outcome.update(worker.process([job.id])))
    try:
        with caplog.at_level(logging.WARNING, logger="spool.worker"):
            wave.start()
            assert wait_until(lambda: store.refused == 1)
            time.sleep(0.5)  # a few more dispatcher turns, one renewal among them
            assert wave.is_alive() and not outcome  # still waiting for its handler
            release.set()
            wave.join(WAIT)
    finally:
        release.set()
        worker.close()
    assert outcome == {job.id: "succeeded"}
    assert stored(mem, job.id).attempts == 1
    assert any("cannot renew leases now" in r.getMessage() for r in caplog.records)


# -- 5. A store outage is not a lost lease -------------------------------------------


class Outage(ClaimSpy):
    """The store refuses every finish as unavailable (a full disk, a lost database),
    and each refusal moves the worker's clock a lease on, so it gives up at once."""

    def __init__(self, store: MemoryStore, mono: FakeMonotonic) -> None:
        super().__init__(store)
        self._clock = mono

    def finish(self, completions: Any) -> list[bool]:
        self._clock.advance(LEASE)
        raise StoreUnavailable("the disk holding the SQLite database is full")


@pytest.mark.parametrize(
    "max_attempts, then",
    [
        (3, "it runs again once its lease expires"),
        (1, "it was the last attempt, so the job is dead once its lease expires"),
    ],
)
def test_outcomes_an_outage_kept_out_of_the_store_are_not_logged_as_lost_leases(
    mem, clock, reg, mono, caplog, max_attempts: int, then: str
) -> None:
    reg.handler("fine")(lambda payload: "ok")
    job = add(mem, clock, "fine", max_attempts=max_attempts)
    store = Outage(mem, mono)
    config = WorkerConfig(concurrency=1, lease_seconds=LEASE)
    worker = Worker(store, reg, config, middleware=[JobEvents()])
    try:
        with caplog.at_level(logging.DEBUG, logger="spool"):
            stats = drained(worker)
    finally:
        worker.close()
    events = [(r.event, r.levelname) for r in caplog.records if getattr(r, "job_id", "") == job.id]
    assert ("outcome_unwritten", "WARNING") in events
    assert all(event != "lease_lost" for event, _ in events)
    [line] = [r for r in caplog.records if getattr(r, "event", "") == "outcome_unwritten"]
    assert line.getMessage() == (
        "job outcome_unwritten: the store is unavailable, so this attempt's outcome "
        f"(succeeded) could not be written; {then}"
    )
    assert (stats.unwritten, stats.lost_lease, stats.succeeded) == (1, 0, 0)
    assert get(mem, job.id).state is JobState.RUNNING  # comes back when the lease expires


def test_a_finish_refused_for_a_lost_lease_is_still_logged_as_one(mem, clock, reg, caplog) -> None:
    reg.handler("fine")(lambda payload: "ok")
    job = add(mem, clock, "fine")

    class Refuses(ClaimSpy):
        def finish(self, completions: Any) -> list[bool]:
            return [False] * len(completions)

    store = Refuses(mem)
    worker = Worker(store, reg, WorkerConfig(concurrency=1), middleware=[JobEvents()])
    try:
        with caplog.at_level(logging.DEBUG, logger="spool"):
            stats = drained(worker)
    finally:
        worker.close()
    events = [r.event for r in caplog.records if getattr(r, "job_id", "") == job.id]
    assert "lease_lost" in events and "outcome_unwritten" not in events
    assert (stats.lost_lease, stats.unwritten) == (1, 0)


# -- 6. What a hard kill costs (the docs' claim) -------------------------------------


def test_a_job_claimed_ahead_by_a_worker_that_dies_comes_back_with_its_attempt(
    mem, clock, reg
) -> None:
    """A worker holds jobs it has not started; killed, it leaves them to lease expiry,
    which gives their attempt back (they never started): one on its last attempt is
    claimed again, not buried without running."""
    started, release = threading.Event(), threading.Event()
    ran: list[str] = []

    @reg.handler("busy", priority=1, timeout=WAIT * 3)
    def busy(payload: dict[str, Any]) -> None:
        started.set()
        release.wait(WAIT)

    @reg.handler("once", max_attempts=1)
    def once(payload: dict[str, Any], ctx: JobContext) -> None:
        ran.append(ctx.job.id)

    add(mem, clock, "busy", priority=1)
    ahead = add(mem, clock, "once", max_attempts=1)
    worker = Worker(mem, reg, WorkerConfig(concurrency=1, lease_seconds=LEASE, idle_poll=3600))
    worker._busy_seconds = 0.001  # as after a run of quick jobs: it claims ahead
    runner = threading.Thread(target=worker.drain, daemon=True)
    runner.start()
    try:
        assert started.wait(WAIT)
        # Claimed into the worker's inbox behind the running job, not started.
        assert wait_until(lambda: get(mem, ahead.id).state is JobState.RUNNING)
        # The worker dies here (its leases are never extended again): the next claim
        # anywhere, once the lease has expired, reaps the job and takes it again.
        clock.advance(LEASE + 1)
        [again] = mem.claim(10, LEASE, ids=[ahead.id])
        assert again.attempts == 1
    finally:
        release.set()
        runner.join(WAIT)
        worker.close()
    assert mem.attempts(ahead.id) == []  # nothing ran: no lease_expired attempt
    assert ran == []  # its handler never ran

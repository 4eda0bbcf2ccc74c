"""Claim, run, complete, retry or bury.

One dispatcher (the thread that calls `run` or `drain`) claims due jobs in
batches under a lease and hands them to a pool of threads; pool threads run
handlers and leave completions in an outbox that the dispatcher writes back in
batches. The dispatcher also enforces handler timeouts (an abandoned attempt is
recorded as failed and its thread replaced) and extends the leases of jobs that
are still running.

`drain(deadline)` is the serverless shape: claim only while a job could still
finish before the deadline, then finish what is held. `run()` is the
long-running shape: sleep until work arrives (woken by the store's notifier,
not a fixed interval) and stop gracefully when asked.
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from pydantic import BaseModel, ValidationError

from chalicelib.errors import PermanentError, RetryAfter, UnknownJobType
from chalicelib.handlers import HandlerSpec, JobContext, Registry
from chalicelib.models import Completion, Job, JobState
from chalicelib.storage.base import JobStore

log = logging.getLogger("spool.worker")

# Drain leaves this much room past the longest handler timeout before its deadline.
DRAIN_MARGIN = 1.0
MAX_RESULT_BYTES = 256 * 1024


class Middleware:
    """Hooks around each attempt (metrics, tracing, logging). Override what you need."""

    def before_attempt(self, job: Job) -> None:
        """Called in the pool thread just before the handler runs."""

    def after_attempt(self, job: Job, completion: Completion, seconds: float) -> None:
        """Called once the attempt's outcome is known (before it is written)."""

    def after_flush(self, completions: Sequence[Completion], applied: Sequence[bool]) -> None:
        """Called after a batch of completions was written to the store."""


@dataclass
class WorkerConfig:
    concurrency: int = 8
    lease_seconds: float = 60.0
    queues: tuple[str, ...] | None = None
    batch_size: int = 100
    idle_poll: float = 1.0  # fallback wake-up when no notification arrives
    flush_delay: float = 0.002  # how long completions may wait to be batched
    # Write each completion before taking the next job: at most `concurrency`
    # attempts are re-run after a crash, at the cost of one write per job.
    sync_finish: bool = False


@dataclass
class WorkerStats:
    claimed: int = 0
    succeeded: int = 0
    retried: int = 0
    dead: int = 0
    timed_out: int = 0
    lost_lease: int = 0

    @property
    def finished(self) -> int:
        return self.succeeded + self.retried + self.dead


@dataclass
class _Attempt:
    job: Job
    spec: HandlerSpec | None
    deadline: float = 0.0
    ctx: JobContext | None = None
    abandoned: bool = False
    started: float = 0.0
    lease_expires_at: datetime | None = None


@dataclass
class _State:
    inbox: deque[_Attempt] = field(default_factory=deque)
    running: dict[str, _Attempt] = field(default_factory=dict)
    outbox: list[tuple[_Attempt, Completion, float]] = field(default_factory=list)
    threads: int = 0
    closing: bool = False


class Worker:
    def __init__(
        self,
        store: JobStore,
        registry: Registry,
        config: WorkerConfig | None = None,
        middleware: Sequence[Middleware] = (),
        rng: random.Random | None = None,
    ) -> None:
        self.store = store
        self.registry = registry
        self.config = config or WorkerConfig()
        self.middleware = list(middleware)
        self.rng = rng or random.Random()
        self.stats = WorkerStats()
        self._lock = threading.Lock()
        self._stats_lock = threading.Lock()
        self._work = threading.Condition(self._lock)  # pool threads wait here
        self._events = threading.Condition(self._lock)  # the dispatcher waits here
        self._state = _State()
        self._stop = threading.Event()
        self._woken = False
        self._last_lease_check = time.monotonic()

    # -- one attempt -------------------------------------------------------
    def execute(self, attempt: _Attempt) -> Completion:
        """Run one claimed job through its handler and decide what happens next."""
        job = attempt.job
        spec = attempt.spec
        token = job.lease_token or ""
        if spec is None:
            return Completion(job.id, token, JobState.DEAD, error=f"no handler for {job.type!r}")
        try:
            payload = spec.parse(job.payload)
        except ValidationError as exc:
            return Completion(job.id, token, JobState.DEAD, error=f"invalid payload: {exc}")
        assert attempt.ctx is not None
        for m in self.middleware:
            m.before_attempt(job)
        try:
            result = spec.call(payload, attempt.ctx)
            if isinstance(result, BaseModel):
                result = result.model_dump(mode="json")
            encoded = json.dumps(result)
            if len(encoded) > MAX_RESULT_BYTES:
                raise PermanentError(f"result is {len(encoded)} bytes, over {MAX_RESULT_BYTES}")
            return Completion(job.id, token, JobState.SUCCEEDED, result=result)
        except PermanentError as exc:
            return Completion(job.id, token, JobState.DEAD, error=_describe(exc))
        except RetryAfter as exc:
            return self._retry(job, spec, _describe(exc), delay=exc.seconds)
        except (TypeError, ValueError) as exc:
            if "JSON serializable" in str(exc) or "Circular reference" in str(exc):
                return Completion(job.id, token, JobState.DEAD, error=f"result is not JSON: {exc}")
            return self._retry(job, spec, _describe(exc))
        except Exception as exc:
            return self._retry(job, spec, _describe(exc))

    def _retry(
        self, job: Job, spec: HandlerSpec, error: str, delay: float | None = None
    ) -> Completion:
        token = job.lease_token or ""
        if job.attempts >= job.max_attempts:
            return Completion(job.id, token, JobState.DEAD, error=error)
        wait = spec.retry.delay(job.attempts, self.rng) if delay is None else max(0.0, delay)
        retry_at = self.store.clock.now() + timedelta(seconds=wait)
        return Completion(job.id, token, JobState.RETRYING, error=error, retry_at=retry_at)

    # -- the pool ----------------------------------------------------------
    def _spawn(self) -> None:
        self._state.threads += 1
        threading.Thread(target=self._pool_loop, name="spool-pool", daemon=True).start()

    def _pool_loop(self) -> None:
        state = self._state
        while True:
            with self._lock:
                while not state.inbox and not state.closing:
                    self._work.wait()
                if not state.inbox:
                    state.threads -= 1
                    self._events.notify()
                    return
                attempt = state.inbox.popleft()
                now = time.monotonic()
                attempt.started = now
                timeout = attempt.spec.timeout if attempt.spec else 1.0
                attempt.deadline = now + timeout
                attempt.ctx = JobContext(attempt.job, attempt.deadline)
                state.running[attempt.job.id] = attempt
            completion = self.execute(attempt)
            seconds = time.monotonic() - attempt.started
            if self.config.sync_finish and not attempt.abandoned:
                self._record([(attempt, completion, seconds)])
            with self._lock:
                if attempt.abandoned:
                    # The dispatcher already recorded a timeout and started a replacement.
                    state.threads -= 1
                    return
                del state.running[attempt.job.id]
                if not self.config.sync_finish:
                    state.outbox.append((attempt, completion, seconds))
                if (
                    len(state.outbox) >= self.config.batch_size
                    or len(state.inbox) <= self.config.concurrency // 2
                ):
                    self._events.notify()

    def _ensure_threads(self) -> None:
        with self._lock:
            while self._state.threads < self.config.concurrency:
                self._spawn()

    # -- dispatcher pieces ---------------------------------------------------
    def _in_flight(self) -> int:
        return len(self._state.inbox) + len(self._state.running)

    def _claim(self, want: int) -> int:
        if want <= 0:
            return 0
        jobs = self.store.claim(want, self.config.lease_seconds, self.config.queues)
        if not jobs:
            return 0
        attempts = []
        for job in jobs:
            try:
                spec: HandlerSpec | None = self.registry.get(job.type)
            except UnknownJobType:
                spec = None
            attempts.append(_Attempt(job, spec, lease_expires_at=job.lease_expires_at))
        with self._lock:
            self._state.inbox.extend(attempts)
            self._work.notify(len(attempts))
        self.stats.claimed += len(jobs)
        return len(jobs)

    def _reap_timeouts(self) -> None:
        now = time.monotonic()
        with self._lock:
            for attempt in list(self._state.running.values()):
                if attempt.deadline and now >= attempt.deadline and not attempt.abandoned:
                    attempt.abandoned = True
                    if attempt.ctx is not None:
                        attempt.ctx.cancelled.set()
                    del self._state.running[attempt.job.id]
                    assert attempt.spec is not None
                    message = f"timed out after {attempt.spec.timeout:g}s"
                    completion = self._retry(attempt.job, attempt.spec, message)
                    self._state.outbox.append((attempt, completion, now - attempt.started))
                    self.stats.timed_out += 1
                    self._spawn()

    def _extend_leases(self) -> None:
        now = self.store.clock.now()
        margin = timedelta(seconds=self.config.lease_seconds / 2)
        with self._lock:
            due = [
                a
                for a in self._state.running.values()
                if a.lease_expires_at is not None and a.lease_expires_at - now <= margin
            ]
        for attempt in due:
            token = attempt.job.lease_token or ""
            if self.store.extend_lease(attempt.job.id, token, self.config.lease_seconds):
                attempt.lease_expires_at = now + timedelta(seconds=self.config.lease_seconds)
            else:
                attempt.lease_expires_at = None  # lost; finish will be refused

    def _flush(self) -> int:
        with self._lock:
            batch, self._state.outbox = self._state.outbox, []
        if not batch:
            return 0
        self._record(batch)
        return len(batch)

    def _record(self, batch: list[tuple[_Attempt, Completion, float]]) -> None:
        for attempt, completion, seconds in batch:
            for m in self.middleware:
                m.after_attempt(attempt.job, completion, seconds)
        completions = [c for _, c, _ in batch]
        applied = self.store.finish(completions)
        with self._stats_lock:
            for completion, ok in zip(completions, applied, strict=True):
                if not ok:
                    self.stats.lost_lease += 1
                elif completion.state is JobState.SUCCEEDED:
                    self.stats.succeeded += 1
                elif completion.state is JobState.RETRYING:
                    self.stats.retried += 1
                else:
                    self.stats.dead += 1
        for m in self.middleware:
            m.after_flush(completions, applied)

    def _wait_for_events(self, timeout: float) -> None:
        with self._lock:
            if self._state.outbox and len(self._state.outbox) >= self.config.batch_size:
                return
            self._events.wait(timeout)

    def _next_deadline_in(self) -> float:
        with self._lock:
            deadlines = [a.deadline for a in self._state.running.values() if a.deadline]
        if not deadlines:
            return self.config.idle_poll
        return max(0.0, min(deadlines) - time.monotonic())

    # -- public shapes -------------------------------------------------------
    def _step(self, can_claim: bool, prefetch: bool) -> int:
        """One dispatcher turn: record timeouts, write completions, claim if there is room."""
        self._reap_timeouts()
        self._flush()
        if time.monotonic() - self._last_lease_check > self.config.lease_seconds / 6:
            self._extend_leases()
            self._last_lease_check = time.monotonic()
        if not can_claim or self._stop.is_set():
            return 0
        with self._lock:
            room = self.config.concurrency * (2 if prefetch else 1) - self._in_flight()
        # Claim in useful batches: wait until half the slots are free unless idle.
        if room >= max(1, self.config.concurrency // 2) or (room > 0 and not self._in_flight()):
            return self._claim(min(room, self.config.batch_size))
        return 0

    def _idle(self) -> bool:
        with self._lock:
            return not self._in_flight() and not self._state.outbox

    def drain(self, deadline: float | None = None) -> WorkerStats:
        """Run due jobs until none are left or the deadline (a time.monotonic() value) nears.

        Claims only while the longest handler timeout still fits before the
        deadline, and prefetches only while twice that fits, so everything it
        holds is finished (or timed out and recorded) before it returns.
        """
        self._ensure_threads()
        longest = self.registry.max_timeout() + DRAIN_MARGIN
        while True:
            now = time.monotonic()
            fits = deadline is None or now + longest <= deadline
            prefetch = deadline is None or now + 2 * longest <= deadline
            if self._step(fits, prefetch):
                continue
            if self._idle():
                break
            self._wait_for_events(min(self._next_deadline_in(), 0.05))
        self._flush()
        return self.stats

    def process(self, job_ids: Sequence[str], deadline: float | None = None) -> dict[str, str]:
        """Run specific jobs (SQS delivery). Returns job id -> outcome.

        Outcomes: succeeded / retrying / dead (finished here), skipped (not due,
        already taken or finished: the message is redundant), or deferred (not
        claimed because the deadline left too little time: redeliver it).
        """
        outcome: dict[str, str] = {}
        if (
            deadline is not None
            and time.monotonic() + self.registry.max_timeout() + DRAIN_MARGIN > deadline
        ):
            return dict.fromkeys(job_ids, "deferred")
        self._ensure_threads()
        jobs = self.store.claim(len(job_ids), self.config.lease_seconds, None, ids=list(job_ids))
        claimed = {j.id for j in jobs}
        for job_id in job_ids:
            if job_id not in claimed:
                outcome[job_id] = "skipped"
        attempts = []
        for job in jobs:
            try:
                spec: HandlerSpec | None = self.registry.get(job.type)
            except UnknownJobType:
                spec = None
            attempts.append(_Attempt(job, spec, lease_expires_at=job.lease_expires_at))
        with self._lock:
            self._state.inbox.extend(attempts)
            self._work.notify(len(attempts))
        self.stats.claimed += len(jobs)
        recorded: dict[str, Completion] = {}

        class _Collect(Middleware):
            def after_attempt(self, job: Job, completion: Completion, seconds: float) -> None:
                recorded[job.id] = completion

        collector = _Collect()
        self.middleware.append(collector)
        try:
            while not self._idle():
                self._step(False, False)
                if self._in_flight():
                    self._wait_for_events(min(self._next_deadline_in(), 0.05))
            self._flush()
        finally:
            self.middleware.remove(collector)
        for job_id, completion in recorded.items():
            outcome[job_id] = completion.state.value
        return outcome

    def run(self, burst: bool = False) -> WorkerStats:
        """Work until stop() (or, with burst, until nothing is due), then finish what is held."""
        if burst:
            return self.drain(None)
        notifier: Any = getattr(self.store, "notifier", None)
        self._ensure_threads()
        if notifier is not None:
            notifier.wait(0)  # subscribe before the first claim, so no wake-up is missed
            threading.Thread(target=self._bridge, args=(notifier,), daemon=True).start()
        while not self._stop.is_set():
            with self._lock:
                self._woken = False
            if self._step(True, True):
                continue
            timeout = self.config.flush_delay if self._state.outbox else self._idle_timeout()
            with self._lock:
                if not self._woken and not self._stop.is_set():
                    self._events.wait(timeout)
        self._shutdown()
        return self.stats

    def _idle_timeout(self) -> float:
        timeout = min(self.config.idle_poll, self._next_deadline_in())
        due = self.store.next_due_at(self.config.queues)
        if due is not None:
            until = (due - self.store.clock.now()).total_seconds()
            timeout = min(timeout, max(0.0, until))
        return max(0.001, timeout)

    def _bridge(self, notifier: Any) -> None:
        while not self._stop.is_set():
            if notifier.wait(self.config.idle_poll):
                with self._lock:
                    self._woken = True
                    self._events.notify()

    def _shutdown(self) -> None:
        # Finish what is held: nothing new is claimed once stop is set.
        while True:
            self._reap_timeouts()
            self._flush()
            with self._lock:
                if not self._in_flight() and not self._state.outbox:
                    break
            self._wait_for_events(min(self._next_deadline_in(), 0.05))
        self.close()

    def stop(self) -> None:
        self._stop.set()
        with self._lock:
            self._events.notify_all()

    def close(self) -> None:
        with self._lock:
            self._state.closing = True
            self._work.notify_all()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__

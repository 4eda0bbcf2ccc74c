"""Claim, run, complete, retry or bury.

One dispatcher (the thread that calls `run` or `drain`) claims due jobs in
batches under a lease and hands them to a pool of threads; pool threads run
handlers and leave completions in an outbox that the dispatcher writes back in
batches (on a store with `concurrent_writes`, such as Postgres, the write runs
on a flusher thread while the dispatcher's next claim runs beside it). The
dispatcher also enforces handler timeouts (an abandoned attempt is
recorded as failed and its thread replaced; under a concurrency limit, only once
its handler returns, see `_abandon`) and extends the leases of jobs that are
still running.

`drain(deadline)` is the serverless shape: claim only while a job could still
finish before the deadline, then finish what is held. `run()` is the
long-running shape: sleep until work arrives (woken by the store's notifier,
not a fixed interval) and stop gracefully when asked. Under fair turns the
thread that hears the notifier claims a few jobs itself (_claim_announced), so
a newcomer tenant's job need not wait for the dispatcher's step in progress.

Delivery is at least once. After a crash, the attempts whose handlers ran but
whose completions were not yet written run again once their leases expire.
With `WorkerConfig.sync_finish` each completion is written before the pool
thread takes its next job, so that redo window is at most `concurrency`
attempts; by default completions are batched for speed, and the window is up
to `concurrency` plus the unflushed batch (at most `batch_size`, usually only
the last `flush_delay` worth of completions).

A worker claims ahead of its pool (`_depth`) while handlers are quick: about
PREFETCH_SECONDS of work per thread, at least two jobs per thread and at most about
`batch_size` in all (or twice `concurrency` where that is more), plus up to
`concurrency` claimed early under fair turns. Handlers slower than PREFETCH_SECONDS,
a worker that has timed none yet and a rate limit get one job per thread. With
`WorkerConfig.start_marks` (the default) a crash costs no attempt of a job that
never ran: what goes straight to an idle pool thread is claimed started, what is
claimed beyond that unstarted, and each pool thread marks its job started just
before the handler (chalicelib/start_marks.py, the marks of several threads in one
write). After a hard kill (SIGKILL, the OOM killer, a lost machine) the unstarted
jobs come back through lease expiry with their attempts given back; a started one
spends its attempt, so a handler that kills its worker still ends dead. Without
marks (the Lambda functions, chalicelib/events.py) an attempt is spent at the claim,
and one claimed on its last attempt is buried (dead, "lease expired") without
running if the invocation dies first. A graceful stop (`stop`, SIGTERM) runs what
it holds first.

A store outage is not a crash. Any error a store call raises (not only the
StoreUnavailable a store maps) is waited out with jittered backoff and said once
(`self.outage`, chalicelib/store_outage.py); completions that could not be written
are held (`_State.held`) and written first when the store is back. Only what
waiting cannot fix (`store_outage.is_fatal`) ends `run()`. A stop during an outage
tries the held completions for `stop_flush_seconds`, then lets them go, each named.
A refusal of what was written (`store_outage.refuses_the_write`: too big for the
store, a value it cannot hold) is no outage: that batch is written job by job and
the refused job's outcome written reduced (`_refused`), holding no other.
"""

from __future__ import annotations

import json
import logging
import math
import random
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import AbstractContextManager
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from functools import partial
from typing import Any

from pydantic import BaseModel, ValidationError

from chalicelib import (
    attempt_record,
    forked_child,
    handler_output,
    logs,
    std_streams,
    worker_id,
)
from chalicelib.errors import (
    PermanentError,
    RetryAfter,
    UnknownJobType,
)
from chalicelib.handlers import HandlerSpec, JobContext, Registry
from chalicelib.jsonstrict import (
    CIRCULAR,
    NESTED_TOO_DEEP,
    READABLE_INT_DIGITS,
    holds_unreadable_int,
    is_circular,
    is_finite_json,
    json_text_over,
    loads_strict,
    nested_deeper_than,
    replaced_surrogates,
    shown_path,
    surrogate_path,
)
from chalicelib.limits import ClaimPolicy, Hold, limit_keys
from chalicelib.logs import job_event, payload_text
from chalicelib.middleware import Middleware
from chalicelib.models import (
    WAITING_STATES,
    Completion,
    Job,
    JobState,
    JobTiming,
    error_text,
    error_type_name,
    exception_text,
)
from chalicelib.retry import retry_after_seconds
from chalicelib.start_marks import StartMarks, give_way
from chalicelib.storage.base import JobStore, job_timings
from chalicelib.store_outage import (
    Outage,
    describe,
    fatal_error,
    is_fatal,
    is_store_error,
    lost_write,
    refuses_the_write,
)
from chalicelib.timebounds import clamp_delay

__all__ = ["Middleware", "Worker", "WorkerConfig", "WorkerStats"]

log = logging.getLogger("spool.worker")

# Drain leaves this much room past the longest handler timeout before its deadline.
DRAIN_MARGIN = 1.0
# drain() and process() stop riding out a store outage this long before their deadline,
# so the invocation can still answer (handle_sqs names the unwritten jobs' messages in
# batchItemFailures) before Lambda ends it mid-wait.
FLUSH_MARGIN = 2.0
# A held lease is renewed once this share of it or less is left, at the first look at
# leases after (one every lease/6): so with between 2/3 and 1/2 of it left, at least a
# second of a 2 s lease for the renewal's own write to wait out a busy machine. Renewed
# with half left, at worst a third (0.67 s) was left, less than one write took when a
# dispatcher was starved by CPU-bound handlers (tests/test_chaos_s48_lease_renewal.py).
RENEW_LEFT = 2 / 3
# Hold about this much work per pool thread (judged by recent handler times), so
# fast jobs are claimed and finished in large batches while slow ones are not hoarded.
PREFETCH_SECONDS = 0.05
# What a worker assumes of its jobs until it has timed some: long, so it claims no
# more than its free threads. Assuming them short, a new worker given 4 jobs of 15 s
# at concurrency 2 claimed all 4: two sat `running` in its inbox for 15 s, their
# attempt spent, while another worker stood idle beside them.
FIRST_GUESS_SECONDS = 1.0
# Handlers quicker than this have pool threads ready to ask for their next start mark
# together, so the thread about to write the marks gives way for them first; behind
# slower ones it would only wait out the dispatcher's turn with the interpreter lock.
QUICK_HANDLER_SECONDS = 0.001
# process() (SQS delivery) holds a finished job's completion this long at most while
# others of its wave still run, so a wave's completions are written in one request.
WAVE_HOLD = 1.0
MAX_RESULT_BYTES = 256 * 1024
# Why a thread would not start, and the way out, where a worker says it cannot.
THREAD_REFUSED = (
    "the process may start no more threads: it is at its limit of threads (ulimit -u) "
    "or short of address space for another thread's stack (ulimit -v)"
)
# A result whose JSON needs at least this much (jsonstrict.json_text_over) is refused
# unencoded; one under it is encoded (at most a few MB: a character is at most 12
# bytes of JSON) and its error gives its exact size.
RESULT_COUNT_CAP = 4 * MAX_RESULT_BYTES
# Levels of arrays and objects a result may nest, as a payload may (the API's parser
# stops near 200). Deeper, it encodes on a pool thread's short stack but reading it
# back on a deeper one (the API's, under its server) raises RecursionError: a 500.
MAX_RESULT_DEPTH = 200
# Results that are always valid, small JSON: no need to encode them to check.
# (Not int: a huge one has no JSON form under Python's digit limit.)
_SMALL_SCALARS = (bool,)
# While every due job is held back by a limit, look again this often: a local
# completion (a freed slot) wakes the dispatcher sooner; a rate window or another
# process's completion is noticed within this.
HOLD_POLL = 0.05
# NaN and Infinity are not JSON; one encoder, not one per call.
_strict_json = json.JSONEncoder(allow_nan=False).encode


def _claimable(job: Job | JobTiming, now: datetime) -> bool:
    """Whether a claim made `now` could take the job: waiting and due, or running
    under a lease that has lapsed (a claim reaps it)."""
    if job.state in WAITING_STATES:
        return job.run_at <= now
    expires = job.lease_expires_at
    return job.state is JobState.RUNNING and expires is not None and expires <= now


@dataclass
class WorkerConfig:
    concurrency: int = 8
    lease_seconds: float = 60.0
    queues: tuple[str, ...] | None = None
    batch_size: int = 100
    idle_poll: float = 1.0  # fallback wake-up when no notification arrives
    flush_delay: float = 0.002  # how long completions may wait to be batched
    # Write each completion before taking the next job: at most `concurrency`
    # attempts are re-run after a crash (instead of up to concurrency + the
    # unflushed batch), at the cost of one store write per job.
    sync_finish: bool = False
    # Attempt history and heartbeats (chalicelib/attempt_record.py); None: read
    # SPOOL_TRACEBACK_BYTES / SPOOL_HEARTBEAT_SECONDS from the environment.
    traceback_bytes: int | None = None
    heartbeat_seconds: float | None = None
    # Limits and fair turns the store's claim keeps (chalicelib/limits.py); None: none.
    policy: ClaimPolicy | None = None
    # Claim unstarted and mark each job started just before its handler (start_marks.py),
    # so a crash spends no attempt of a job still waiting in this worker; jobs for
    # threads idle at the claim are claimed started (_claim_for_free_threads). Off: claims
    # count the attempt at once, as the Lambda functions do, where a mark would be one
    # more DynamoDB request for every job (docs/aws.md, "Requests per job").
    start_marks: bool = True
    # A stop during a store outage tries this long to write the results it holds,
    # then exits naming them (their leases lapse and they run again).
    stop_flush_seconds: float = 5.0


@dataclass
class WorkerStats:
    claimed: int = 0
    succeeded: int = 0
    retried: int = 0
    dead: int = 0
    timed_out: int = 0
    lost_lease: int = 0
    # Outcomes the store could not take (an outage outlasting their leases): not a lost
    # lease, the job is still ours in the store and runs again once the lease expires.
    unwritten: int = 0

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
    lost: bool = False  # the lease could not be extended: do not start it
    started_at: datetime | None = None  # the store's clock, for the attempt's record
    failure: BaseException | None = None  # what the handler raised, if it raised
    thread: int | None = None  # the pool thread running it (where a timeout was stuck)
    stuck_at: str | None = None  # that thread's stack when the attempt was abandoned
    # A write of its outcome failed: the store may have applied it all the same (a
    # reply lost with its connection), so a refused rewrite is read back (_written).
    uncertain: bool = False
    # Claimed started, for a pool thread that was idle at the claim: no mark to write.
    marked: bool = False


@dataclass
class _State:
    inbox: deque[_Attempt] = field(default_factory=deque)
    running: dict[str, _Attempt] = field(default_factory=dict)
    outbox: list[tuple[_Attempt, Completion, float]] = field(default_factory=list)
    # Completions whose write failed (a store outage): their middleware has seen them,
    # so they are written as they are, first, once the store takes writes again.
    held: list[tuple[_Attempt, Completion, float]] = field(default_factory=list)
    # Timed out under a concurrency limit while the handler still runs: the job keeps
    # its slot (and lease) until the handler returns or the worker closes (_abandon).
    lingering: dict[str, _Attempt] = field(default_factory=dict)
    threads: int = 0
    idle: int = 0  # pool threads waiting in _take for a job
    closing: bool = False


def no_handler_error(job_type: str) -> str:
    """A claimed job whose type this worker has no handler for: why, and the way out
    (docs/handlers.md). It said only "no handler for 'TYPE'"."""
    return (
        f"no handler for {job_type!r} in this worker: give it the module that registers "
        f"{job_type!r} (SPOOL_HANDLERS), then redrive the job"
    )


SHOWN_PAYLOAD_ERRORS = 3


def invalid_payload_error(job_type: str, exc: ValidationError) -> str:
    """A stored payload the handler's model no longer takes, field by field as the API
    words a refused one. str(exc) was pydantic's report: a count, the model's name,
    `[type=..., input_value=..., input_type=...]` and an errors.pydantic.dev address."""
    from chalicelib.validation_text import validation_summary

    said = validation_summary(exc, ("payload",), SHOWN_PAYLOAD_ERRORS)
    return (
        f"invalid payload: the {job_type!r} handler's model does not take the stored "
        f"payload ({said}); fix the handler or the job, then redrive it"
    )


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
        # Reentrant, so stop() may run in a signal handler on the dispatcher thread.
        self._lock = threading.RLock()
        self._stats_lock = threading.Lock()
        self._work = threading.Condition(self._lock)  # pool threads wait here
        self._events = threading.Condition(self._lock)  # the dispatcher waits here
        self._state = _State()
        # The pool thread count last said to be short of the concurrency (_ensure_threads).
        self._short_of_threads = -1
        # The most jobs one claim asks for, halved by a claim that ran out of memory.
        self._claim_cap = sys.maxsize
        # Claims are unstarted: each job is marked started just before its handler runs
        # (chalicelib/start_marks.py), so a job lost from the prefetch keeps its attempt.
        self._marks = StartMarks(store.start, make_way=self._give_way_if_quick)
        self._stop = threading.Event()
        # Whether run() has ended (and given the store its usual deadlines back): a stop
        # after that hurries nothing. Held around each change of the store's deadline.
        self._ran_out = False
        self._hurry_lock = threading.Lock()
        self._woken = False
        self._held = False  # the last claim took nothing because limits held every due job
        # The store announced new work: with fair turns, the next step claims a few
        # jobs first (see _step), so a newcomer need not wait for the prefetched
        # batch of a tenant with a backlog.
        self._announced = False
        self._fair = self.config.policy is not None and self.config.policy.fair
        # The bridge's claims (_claim_announced) end before shutdown looks for idle:
        # a job claimed after that would sit in the inbox of a closed pool.
        self._side_claim = threading.Lock()
        self._side_claims_closed = False
        # A rate limit counts a start when the store hands the job out: a job claimed
        # ahead and started later, beside the next window's, let 10 start in a second
        # under "5/s". Under one, nothing is claimed beyond the free threads (_depth).
        self._no_prefetch = self.config.policy is not None and bool(
            self.config.policy.rate_limits()
        )
        self._notifier: Any = None
        # Recent handler time per job (moving average): sets how deep to prefetch.
        self._busy_seconds = FIRST_GUESS_SECONDS
        self._last_lease_check = time.monotonic()
        # Whether the last step's claim left room for another at once: if not, drain()
        # waits for its pool before the next step (a step straight after would write
        # only what finished during the claim, in a finish of its own).
        self._claim_due = True
        # A store whose writes run on their own connections (a server database, not
        # one SQLite file) can write a batch of completions while the next claim runs.
        self._overlap = bool(getattr(store, "concurrent_writes", False))
        self._flusher: ThreadPoolExecutor | None = None
        self._traceback_bytes = (
            attempt_record.traceback_bytes()
            if self.config.traceback_bytes is None
            else self.config.traceback_bytes
        )
        self._heartbeat = self.config.heartbeat_seconds or attempt_record.heartbeat_seconds()
        self._started_at = store.clock.now()
        self._next_beat = 0.0
        # One store outage as this worker sees it: logged when it starts and when it
        # ends, with the backoff between tries (chalicelib/store_outage.py).
        self.outage = Outage(log, "the worker")

    # -- one attempt -------------------------------------------------------
    def execute(self, attempt: _Attempt) -> Completion:
        """Run one claimed job through its handler and decide what happens next.

        Runs on a pool thread, where whatever the handler raises is its attempt's
        failure (see the except clauses)."""
        job = attempt.job
        spec = attempt.spec
        token = job.lease_token or ""
        if spec is None:
            return Completion(job.id, token, JobState.DEAD, error=no_handler_error(job.type))
        try:
            payload = spec.parse(job.payload)
        except ValidationError as exc:
            attempt.failure = exc
            error = invalid_payload_error(job.type, exc)
            return Completion(job.id, token, JobState.DEAD, error=error)
        assert attempt.ctx is not None
        for m in self.middleware:
            m.before_attempt(job)
        try:
            try:
                with handler_output.attempt(attempt.ctx):  # its prints: its log lines
                    result = _call_here(spec, payload, attempt.ctx)
            finally:
                std_streams.mend(job.id, job.type)  # a handler that closed stderr: said once
                logs.keep_on_root()  # one that replaced the root's handlers
        except PermanentError as exc:
            attempt.failure = exc
            return Completion(job.id, token, JobState.DEAD, error=_describe(exc))
        except RetryAfter as exc:
            attempt.failure = exc
            try:
                # Checked when raised; again here for a subclass, or a `seconds` set later.
                wait = retry_after_seconds(exc.seconds)
            except (TypeError, ValueError) as bad:
                error = f"{_describe(exc)} [handler {job.type!r}: {bad}; retried with backoff]"
                return self._retry(job, spec, error)
            return self._retry(job, spec, _describe(exc), delay=wait)
        except BaseException as exc:
            # SystemExit, KeyboardInterrupt and other BaseExceptions too: signals go to
            # the main thread only, so here one is the handler's own doing (sys.exit(),
            # a library's exception class), and letting it through killed the pool thread.
            if not isinstance(exc, Exception) and _on_main_thread():
                raise  # the main thread's Ctrl-C ends the program, as ever
            attempt.failure = exc
            return self._retry(job, spec, _describe(exc))
        # A result that cannot be stored will not become storable on a retry.
        if result is None or type(result) in _SMALL_SCALARS:
            return Completion(job.id, token, JobState.SUCCEEDED, result=result)
        try:
            if isinstance(result, BaseModel):
                result = result.model_dump(mode="json")
            # Far over the limit (a shared string written 100,000 times): refused before
            # it is encoded, which took its whole size again and ran the worker out of
            # memory, retried as a MemoryError. A circular one is the encoder's to name.
            if json_text_over(result, RESULT_COUNT_CAP) and not is_circular(result):
                error = f"result is more than {RESULT_COUNT_CAP} bytes, over {MAX_RESULT_BYTES}"
                return Completion(job.id, token, JobState.DEAD, error=error)
            encoded = _strict_json(result)
        except (TypeError, ValueError, RecursionError) as exc:
            error = f"result is not JSON: {_why_not_json(result, exc)}"
            return Completion(job.id, token, JobState.DEAD, error=error)
        if len(encoded) > MAX_RESULT_BYTES:
            error = f"result is {len(encoded)} bytes, over {MAX_RESULT_BYTES}"
            return Completion(job.id, token, JobState.DEAD, error=error)
        # Counting brackets (in C) clears almost every result at once; only one with
        # enough of them is measured.
        if encoded.count("[") + encoded.count("{") > MAX_RESULT_DEPTH and nested_deeper_than(
            result, MAX_RESULT_DEPTH
        ):
            error = f"result is not JSON: its {NESTED_TOO_DEEP} (more than {MAX_RESULT_DEPTH})"
            return Completion(job.id, token, JobState.DEAD, error=error)
        try:
            # What was checked is what is stored: the live object could still be changed
            # by a thread the handler left running (a set added after the check crashed
            # the worker when the store encoded it; a 1 MB string passed the size check).
            snapshot = loads_strict(encoded)
        except ValueError as exc:  # two keys the encoder wrote as one name: 1 and "1"
            error = f"result is not JSON: two keys of one object become one name in JSON ({exc})"
            return Completion(job.id, token, JobState.DEAD, error=error)
        # Encoded because this process's limit was lifted (a handler's
        # sys.set_int_max_str_digits(0)): every default reader would fail on it.
        if holds_unreadable_int(snapshot, encoded):
            return Completion(job.id, token, JobState.DEAD, error=_HUGE_INT_ERROR)
        # A lone surrogate is written as a `\udXXX` escape (ASCII JSON): no character,
        # refused in a payload (422), so a result holding one is not stored either. An
        # escape in `encoded` (a pair of one too) is rare enough to look closer at.
        if "\\ud" in encoded:
            place = surrogate_path(snapshot)
            if place is not None:
                return Completion(job.id, token, JobState.DEAD, error=_surrogate_error(place))
        return Completion(job.id, token, JobState.SUCCEEDED, result=snapshot)

    def _retry(
        self, job: Job, spec: HandlerSpec, error: str, delay: float | None = None
    ) -> Completion:
        token = job.lease_token or ""
        if job.attempts >= job.max_attempts:
            return Completion(job.id, token, JobState.DEAD, error=error)
        # A handler's RetryAfter, and its backoff (`backoff=(1e12, 1e12)`), are held to
        # the bound a client's delay has: a huge one overflowed the datetime in the
        # pool thread, and the worker died with the job running.
        wait = clamp_delay(spec.retry.delay(job.attempts, self.rng) if delay is None else delay)
        retry_at = self.store.clock.now() + timedelta(seconds=wait)
        return Completion(job.id, token, JobState.RETRYING, error=error, retry_at=retry_at)

    # -- the pool ----------------------------------------------------------
    def _spawn(self) -> None:
        """One more pool thread, counted only if it starts: a start refused (the
        process at its thread limit, as a handler leaking threads makes it) was
        counted anyway, and a worker of concurrency 1 then claimed jobs for a thread
        it did not have, its drains holding them `running` forever."""
        thread = logs.inherited_thread(self._pool_loop, name="spool-pool")
        self._state.threads += 1
        try:
            thread.start()
        except BaseException:
            self._state.threads -= 1
            raise

    def _pool_loop(self) -> None:
        state = self._state
        done: tuple[_Attempt, Completion, float, bool] | None = None
        while True:
            # One critical section hands in the last outcome and takes the next job.
            with self._lock:
                if done is not None:
                    finished, completion, seconds, recorded = done
                    done = None
                    if finished.abandoned:
                        # The dispatcher started a replacement and recorded the timeout,
                        # or holds it for now, to record it here (_abandon).
                        self._let_go(finished, seconds)
                        state.threads -= 1
                        return
                    # Only its own entry: its job may have been taken back and be
                    # running again here, under a new lease (the first one lapsed).
                    if state.running.get(finished.job.id) is finished:
                        del state.running[finished.job.id]
                    if not recorded:
                        state.outbox.append((finished, completion, seconds))
                    self._busy_seconds = 0.9 * self._busy_seconds + 0.1 * seconds
                    if (
                        len(state.outbox) >= self.config.batch_size
                        or len(state.inbox) <= self.config.concurrency
                    ):
                        self._wake()
                attempt = self._take()
                if attempt is None:
                    state.threads -= 1
                    self._wake()
                    return
            if (
                self.config.start_marks
                and not attempt.marked
                and not self._marks.mark(attempt.job.id, attempt.job.lease_token or "")
            ):
                self._not_started(attempt)
                continue
            completion = self._outcome(attempt)
            seconds = time.monotonic() - attempt.started
            recorded = False
            if self.config.sync_finish and not attempt.abandoned:
                # Written now, or held (an outage) for the dispatcher to write later:
                # never lost with the thread.
                recorded = True
                try:
                    self._record([(attempt, completion, seconds)])
                except Exception as exc:
                    if is_fatal(exc):
                        log.error("could not record %s: %s", attempt.job.id, exc)
                    else:
                        self._write_failed(attempt, exc)
            done = (attempt, completion, seconds, recorded)

    def _outcome(self, attempt: _Attempt) -> Completion:
        """execute() and its record; whatever escapes them is a failed attempt.

        execute() catches what a handler raises, so what arrives here is Spool's own
        fault (a middleware, a store's clock, a bug): the job records it as a failed
        attempt naming it, rather than sitting `running` until its timeout with the
        error lost, and the pool thread lives on. BaseException too: a pool thread
        never receives signals, so this swallows no Ctrl-C."""
        try:
            return self._recorded(attempt, self.execute(attempt))
        except BaseException as exc:
            job = attempt.job
            log.exception("attempt %d of %s failed inside the worker", job.attempts, job.id)
            attempt.failure = exc
            return self._recorded(attempt, self._failed(attempt, _describe(exc, "worker error: ")))

    def _failed(self, attempt: _Attempt, error: str) -> Completion:
        """A failed attempt: retried with backoff, or dead once its attempts are used up.
        Never raises: without a handler, or if the backoff itself fails, it is retried
        at once (each try spends an attempt, so it still ends)."""
        job, spec = attempt.job, attempt.spec
        if spec is not None:
            try:
                return self._retry(job, spec, error)
            except Exception:
                log.exception("could not work out when to retry %s", job.id)
        if job.attempts >= job.max_attempts:
            return Completion(job.id, job.lease_token or "", JobState.DEAD, error=error)
        return Completion(
            job.id,
            job.lease_token or "",
            JobState.RETRYING,
            error=error,
            retry_at=self.store.clock.now(),
        )

    def _take(self) -> _Attempt | None:
        """Under the lock: wait for the next job and start its clock; None when closing."""
        state = self._state
        while True:
            while not state.inbox and not state.closing:
                state.idle += 1
                try:
                    self._work.wait()
                finally:
                    state.idle -= 1
            if not state.inbox:
                return None
            attempt = state.inbox.popleft()
            expires = attempt.lease_expires_at
            if attempt.lost or (expires is not None and expires <= self.store.clock.now()):
                # Its lease lapsed while it waited: another worker may own it now.
                with self._stats_lock:
                    self.stats.lost_lease += 1
                self._wake()
                continue
            now = time.monotonic()
            attempt.started = now
            attempt.started_at = self.store.clock.now()
            attempt.thread = threading.get_ident()
            timeout = attempt.spec.timeout if attempt.spec else 1.0
            attempt.deadline = now + timeout
            attempt.ctx = JobContext(
                attempt.job, attempt.deadline, _lease_left=partial(self._lease_left, attempt)
            )
            state.running[attempt.job.id] = attempt
            return attempt

    def _lease_left(self, attempt: _Attempt) -> float:
        """Seconds until the attempt's lease runs out by the store's clock, as this worker
        last renewed it (a renewal is refused from then on): its handler's ctx.cancelled
        reads as set from then, whether or not the store could be asked (LeaseCancel).
        A lease found lost is None, and its ctx.cancelled set already."""
        expires = attempt.lease_expires_at
        if expires is None:
            return math.inf
        return (expires - self.store.clock.now()).total_seconds()

    def _not_started(self, attempt: _Attempt) -> None:
        """The store refused to mark the job started: its lease lapsed while it waited
        (another worker may hold it now), so its handler is not run here."""
        with self._lock:
            if self._state.running.get(attempt.job.id) is attempt:
                del self._state.running[attempt.job.id]
            self._wake()
        with self._stats_lock:
            self.stats.lost_lease += 1

    def _ensure_threads(self) -> None:
        """Start pool threads up to the concurrency; once one will not start, run with
        those started (said once per count) rather than not at all.

        The process at its thread limit (ulimit -u) or short of address space for one
        more thread's stack (ulimit -v) refused the start, and `spool worker
        --concurrency 8` under a 300 MB limit, able to run two, stopped at its first
        drain with "unexpected error: RuntimeError: can't start new thread". With no
        thread at all the refusal is raised, in those words (THREAD_REFUSED)."""
        with self._lock:
            while self._state.threads < self.config.concurrency:
                try:
                    self._spawn()
                except RuntimeError as exc:
                    if self._state.threads == 0:
                        raise RuntimeError(f"{THREAD_REFUSED} ({exc})") from exc
                    if self._short_of_threads != self._state.threads:
                        self._short_of_threads = self._state.threads
                        log.warning(
                            "runs %d of its %d pool threads: %s (%s); it tries again "
                            "at its next drain, or lower --concurrency",
                            self._state.threads,
                            self.config.concurrency,
                            THREAD_REFUSED,
                            exc,
                        )
                    return

    # -- dispatcher pieces ---------------------------------------------------
    @property
    def held_back(self) -> bool:
        """Did the last claim find due jobs that limits held back, and take none?

        After a drain (`spool worker --burst`) that is why due jobs are left queued:
        the command says so rather than a summary that reads as lost jobs."""
        return self._held

    def _in_flight(self) -> int:
        return len(self._state.inbox) + len(self._state.running)

    def _claim_store(
        self, want: int, ids: Sequence[str] | None = None, started: bool = False
    ) -> tuple[list[Job], list[Hold]]:
        """One claim, under the policy when there is one; tells the middleware what it held.
        `started`: the jobs go to free threads at once, so claim them started (no marks)."""
        policy = self.config.policy
        queues = self.config.queues if ids is None else None
        if policy is None or not policy.active:
            lease = self.config.lease_seconds
            started = not self.config.start_marks
            return self.store.claim(want, lease, queues, ids=ids, started=started), []
        with policy.holds.watch() as holds:
            jobs = self.store.claim(
                want,
                self.config.lease_seconds,
                queues,
                ids=ids,
                policy=policy,
                started=started or not self.config.start_marks,
            )
        for mw in self.middleware:
            mw.after_claim(jobs, holds)
        return jobs, holds

    def _claim_for_free_threads(self, want: int) -> int:
        """Claim started as many jobs as there are pool threads idle with nothing waiting
        for them (each goes straight to one: its mark would be one more write for
        nothing), and the rest unstarted, marked as threads take them; how many.

        A worker that waits for work (an idle `run`, light load) then writes one claim
        per job, not a claim and a mark. In a drain the inbox is seldom empty, so
        nearly every claim is the one unstarted claim it was. The started jobs go to
        their threads before the second claim, which is made only when the first took
        all it asked (fewer: nothing more is due)."""
        lease, queues = self.config.lease_seconds, self.config.queues
        with self._lock:
            free = 0 if self._state.inbox else min(self._state.idle, want)
        if free <= 0:
            return self._accept(self.store.claim(want, lease, queues, started=False))
        jobs = self.store.claim(free, lease, queues, started=True)
        taken = self._accept(jobs, started=len(jobs))
        if taken == free < want:
            taken += self._accept(self.store.claim(want - free, lease, queues, started=False))
        return taken

    def _claim(self, want: int) -> int:
        """Claim up to `want` jobs; fewer at a time from the first claim that ran the
        process out of memory (their payloads, decoded at once), halving down to one.

        A `spool worker --concurrency 4` under a 300 MB limit, with jobs of 1.9 MB
        payloads, failed every claim of 4 with MemoryError, said as "store unavailable
        (MemoryError)", and retried the same claim forever, running nothing, though it
        could run them one claim at a time. The smaller claim stays until the worker
        restarts; a claim of one that fails so is an outage as before (said, retried)."""
        want = min(want, self._claim_cap)
        while True:
            try:
                return self._claim_some(want)
            except MemoryError:
                if want <= 1:
                    raise
                asked, want = want, want // 2
                self._claim_cap = want
                log.warning(
                    "out of memory claiming %d jobs at once (their payloads): claims at "
                    "most %d at a time from now on (until the worker restarts)",
                    asked,
                    want,
                )

    def _claim_some(self, want: int) -> int:
        if want <= 0:
            return 0
        policy = self.config.policy
        with self._claiming():
            if self.config.start_marks and (policy is None or not policy.active):
                # Limits and fair turns are left to the policy's claim: one claim, unstarted.
                self._held = False
                return self._claim_for_free_threads(want)
            # Under a rate limit a claim takes no more than the free threads, so its jobs
            # start at once: claimed started, with no start-mark write between the claim
            # (where the store stamps the rate's start) and the handler. That write, one
            # round trip on a busy Postgres (100-300 ms seen), put 4 handler starts in a
            # second under "2/s" and 24 under "20/s".
            jobs, holds = self._claim_store(want, started=self._no_prefetch)
        self._held = bool(holds) and not jobs
        return self._accept(jobs, started=len(jobs) if self._no_prefetch else 0)

    def _claiming(self) -> AbstractContextManager[None]:
        """Around a claim: a lost reply is said as what it means for the jobs (a claim
        that was applied leased them to this worker, which never got them)."""
        return lost_write(
            "a claim",
            "the jobs it may have leased to this worker run again once their leases lapse "
            f"(in at most {self.config.lease_seconds:g}s), as after a crash",
        )

    def _claim_store_accept(self, want: int) -> int:
        """A claim off the dispatcher's thread (_claim_announced): its holds are not the
        dispatcher's to act on (`_held` paces the dispatcher's own idle wait)."""
        with self._claiming():
            jobs, _ = self._claim_store(want)
        return self._accept(jobs)

    def _accept(self, jobs: list[Job], started: int = 0) -> int:
        """Queue claimed jobs for the pool, the first `started` claimed started; how many."""
        if not jobs:
            return 0
        attempts = []
        for i, job in enumerate(jobs):
            try:
                spec: HandlerSpec | None = self.registry.get(job.type)
            except UnknownJobType:
                spec = None
            attempts.append(
                _Attempt(job, spec, lease_expires_at=job.lease_expires_at, marked=i < started)
            )
        with self._lock:
            if self._fair:
                self._queue_fairly(attempts)
            else:
                self._state.inbox.extend(attempts)
            self._work.notify(len(attempts))
            # Under the lock: the wake-up bridge claims too (_claim_announced).
            self.stats.claimed += len(jobs)
        return len(jobs)

    def _queue_fairly(self, attempts: list[_Attempt]) -> None:
        """Under the lock: the inbox takes turns between tenants, as the claim did.

        A claim returns its jobs oldest first, so a batch taken while one tenant has
        a backlog would run that tenant's ~50 jobs before a newcomer's one, and jobs
        claimed earlier would queue ahead of it too: the starvation fair turns exist
        to end. So the inbox is rebuilt as weighted turns: each tenant's jobs keep
        their order, a tenant's k-th job ranks at k / weight, and ties go first to
        tenants that had nothing waiting here."""
        inbox = self._state.inbox
        waiting = {a.job.tenant for a in inbox}
        by_tenant: dict[str, list[_Attempt]] = {}
        for attempt in (*inbox, *attempts):
            by_tenant.setdefault(attempt.job.tenant, []).append(attempt)
        policy = self.config.policy
        assert policy is not None
        tenants = sorted(by_tenant, key=lambda t: t in waiting)  # stable: claim order kept
        turns = [
            (k / policy.weight(tenant), rank, attempt)
            for rank, tenant in enumerate(tenants)
            for k, attempt in enumerate(by_tenant[tenant])
        ]
        turns.sort(key=lambda turn: turn[:2])
        inbox.clear()
        inbox.extend(attempt for _, _, attempt in turns)

    def _reap_timeouts(self) -> None:
        now = time.monotonic()
        with self._lock:
            for attempt in list(self._state.running.values()):
                if attempt.deadline and now >= attempt.deadline and not attempt.abandoned:
                    self._abandon(attempt, now)

    def _abandon(self, attempt: _Attempt, now: float) -> None:
        """Under the lock: give up on an attempt past its timeout, and replace its thread.

        Python cannot stop a thread: the handler runs on, told only by ctx.cancelled.
        Its timeout is recorded at once, unless the job counts against a concurrency
        limit: that write frees the job's slot in the store, which may start the next
        attempt beside the one still running, and the limit promises N at once across
        every thread. Such a job stays held (`running`, its lease extended) until the
        handler returns (_let_go) or the worker closes (_write_lingering)."""
        attempt.stuck_at = attempt_record.stack_of(attempt.thread, self._traceback_bytes)
        attempt.abandoned = True
        if attempt.ctx is not None:
            attempt.ctx.cancelled.set()
        del self._state.running[attempt.job.id]
        self.stats.timed_out += 1
        self._spawn()
        if self._under_concurrency_limit(attempt.job):
            self._state.lingering[attempt.job.id] = attempt
        else:
            self._state.outbox.append((attempt, self._timeout(attempt), now - attempt.started))

    def _under_concurrency_limit(self, job: Job) -> bool:
        """Does a concurrency limit of the claim policy count this job (by queue or type)?"""
        policy = self.config.policy
        if policy is None:
            return False
        limited = policy.concurrency_keys()
        return any(key in limited for key in limit_keys(job.queue, job.type))

    def _let_go(self, attempt: _Attempt, seconds: float) -> None:
        """Under the lock: an abandoned attempt's handler returned after `seconds`. If
        its job was held for a concurrency limit, record the timeout now: the slot is free."""
        if self._state.lingering.get(attempt.job.id) is not attempt:
            return  # recorded when it was abandoned, or when the worker closed
        del self._state.lingering[attempt.job.id]
        failure = attempt.failure
        ended = f"raised {error_type_name(failure)}" if failure is not None else "returned"
        note = f"the handler {ended} after {seconds:.1f}s"
        self._state.outbox.append((attempt, self._timeout(attempt, note), seconds))
        self._wake()

    def _write_lingering(self) -> None:
        """Closing: record the timeouts still held for handlers that have not returned
        (their slots are freed now, though the threads run on until the process ends),
        and write whatever waits in the outbox (a late handler's timeout included)."""
        now = time.monotonic()
        with self._lock:
            lingering, self._state.lingering = self._state.lingering, {}
            for attempt in lingering.values():
                seconds = now - attempt.started
                note = f"the handler was still running after {seconds:.1f}s when the worker stopped"
                self._state.outbox.append((attempt, self._timeout(attempt, note), seconds))
            if not self._state.outbox:
                return
        try:
            self._flush()
        except Exception as exc:  # held: the caller lets them go, naming each
            log.warning("could not write the last completions while closing: %s", exc)

    def _timeout(self, attempt: _Attempt, note: str = "") -> Completion:
        """A timed-out attempt's completion: failed (retry or dead) with a TimeoutError and
        the stack it was stuck in; `note` says how its handler ended, if it has."""
        assert attempt.spec is not None
        message = f"timed out after {attempt.spec.timeout:g}s" + (f" ({note})" if note else "")
        attempt.failure = None  # what it raised once abandoned is not why it failed
        completion = self._retry(attempt.job, attempt.spec, message)
        return self._recorded(
            attempt, completion, error_type="TimeoutError", traceback=attempt.stuck_at
        )

    def _recorded(
        self,
        attempt: _Attempt,
        completion: Completion,
        error_type: str | None = None,
        traceback: str | None = None,
    ) -> Completion:
        """The completion carrying its Attempt, for the job's history (attempt_record.py).
        An exception that cannot even be described must not cost the outcome itself."""
        now = self.store.clock.now()
        try:
            return attempt_record.record(
                completion,
                number=attempt.job.attempts,
                started_at=attempt.started_at or now,
                finished_at=now,
                failure=attempt.failure,
                traceback_limit=self._traceback_bytes,
                error_type=error_type,
                traceback=traceback,
                log_tail=attempt.ctx.log_tail() if attempt.ctx is not None else (),
                told=lambda: payload_text(attempt.job.payload),
            )
        except Exception:
            log.exception(
                "could not describe attempt %d of %s", attempt.job.attempts, attempt.job.id
            )
            return completion

    def _beat(self, force: bool = False) -> None:
        """Tell the store this worker is alive, every SPOOL_HEARTBEAT_SECONDS at most.
        Never fatal: a worker that cannot beat still works its jobs."""
        now = time.monotonic()
        if not force and now < self._next_beat:
            return
        self._next_beat = now + self._heartbeat
        beat = getattr(self.store, "beat", None)
        if beat is None:
            return
        try:
            with lost_write("this worker's heartbeat", "the next beat records it"):
                beat(worker_id.process(), self.config.queues, self._started_at)
        except Exception as exc:
            if is_fatal(exc):  # the claim that follows meets it too, and ends the worker
                log.warning("could not record this worker's heartbeat: %s", exc)
            else:  # an outage like any other: said once, however many beats it spans
                self._outage_failed(exc)

    def _extend_leases(self) -> None:
        """Renew, in one store write, every held lease with RENEW_LEFT of it or less left.

        One write for all: renewed one write each, a dispatcher starved by CPU-bound
        handlers and queued behind other processes' writes took longer than a 2 s lease
        to renew 16 of them, and the last ones were reaped with their handlers running
        (tests/test_chaos_s48_lease_renewal.py)."""
        now = self.store.clock.now()
        margin = timedelta(seconds=self.config.lease_seconds * RENEW_LEFT)
        with self._lock:
            # Prefetched jobs waiting in the inbox hold leases too, and so do timed-out
            # jobs kept for a concurrency limit while their handlers still run.
            state = self._state
            held = [*state.running.values(), *state.inbox, *state.lingering.values()]
        due = [
            a
            for a in held
            if not a.lost and a.lease_expires_at is not None and a.lease_expires_at - now <= margin
        ]
        if not due:
            return
        leases = [(a.job.id, a.job.lease_token or "") for a in due]
        try:
            with lost_write(
                f"a renewal of {len(leases)} lease{'' if len(leases) == 1 else 's'}",
                "it is tried again shortly; a lease that lapses meanwhile lets another "
                "worker run its job (the handler here is told)",
            ):
                kept = self.store.extend_leases(leases, self.config.lease_seconds)
        except Exception as exc:
            # Not a lost lease: the store is down for now. Most of the lease is still
            # left, so the next look (every lease/6 s) tries again. Raised, it ended
            # process() with the wave's handlers still running (on Lambda, frozen
            # mid-job, then run again elsewhere), and the others' leases unrenewed.
            # Said once per outage, not at every look.
            if is_fatal(exc):
                raise
            if not self.outage.down:
                log.warning("cannot renew leases now (%s); trying again shortly", exc)
            self._outage_failed(exc)
            return
        for attempt, ok in zip(due, kept, strict=True):
            if ok:
                attempt.lease_expires_at = now + timedelta(seconds=self.config.lease_seconds)
            else:
                # Lost: a running attempt's finish will be refused; a waiting one is dropped.
                # The handler is told (ctx.cancelled): another worker may run the job now,
                # and under a concurrency limit its slot already counts that one.
                attempt.lease_expires_at = None
                attempt.lost = True
                if attempt.ctx is not None:
                    attempt.ctx.cancelled.set()

    def _flush(self, hold_wave: bool = False) -> int:
        """Write the completions held from an outage and those waiting in the outbox,
        in one try. If the store fails, all of them are held (nothing is lost) and the
        error is raised for the caller to back off (run) or ride out (_flush_riding).

        hold_wave (process()): the outbox stays while _wave_held says so, decided as it
        is taken. Decided before the dispatcher's turn, on an outbox still empty, a
        finish handed in during the turn was written alone (seen in CI, under load)."""
        with self._lock:
            held, self._state.held = self._state.held, []
            if hold_wave and self._wave_held():
                fresh: list[tuple[_Attempt, Completion, float]] = []
            else:
                fresh, self._state.outbox = self._state.outbox, []
        if not held and not fresh:
            return 0
        self._observed(fresh)
        self._write(held + fresh)
        return len(held) + len(fresh)

    def _record(self, batch: list[tuple[_Attempt, Completion, float]]) -> None:
        self._observed(batch)
        self._write(batch)

    def _observed(self, batch: list[tuple[_Attempt, Completion, float]]) -> None:
        for attempt, completion, seconds in batch:
            for m in self.middleware:
                m.after_attempt(attempt.job, completion, seconds)

    def _write(
        self, batch: list[tuple[_Attempt, Completion, float]], reduced: bool = False
    ) -> None:
        """One store write of these completions (their middleware already ran): on any
        failure they are held for the next write and the error is raised. A refusal of
        what was written (store_outage.refuses_the_write) is no outage: see _refused."""
        completions = [c for _, c, _ in batch]
        try:
            with lost_write(
                f"a write of {len(completions)} outcome{'' if len(completions) == 1 else 's'}",
                "the outcomes are held and written again once the store answers (one it took "
                "already is not applied twice)",
            ):
                applied = self.store.finish(completions)
        except Exception as exc:
            if not refuses_the_write(exc):
                for attempt, _, _ in batch:
                    attempt.uncertain = True
                with self._lock:
                    self._state.held[:0] = batch  # oldest first, ahead of any held since
                raise
            self._refused(batch, exc, reduced)
            return
        except BaseException:
            for attempt, _, _ in batch:
                attempt.uncertain = True
            with self._lock:
                self._state.held[:0] = batch  # oldest first, ahead of any held since
            raise
        self.outage.recovered()
        applied = [
            ok or (attempt.uncertain and self._written(attempt, completion))
            for (attempt, completion, _), ok in zip(batch, applied, strict=True)
        ]
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

    def _refused(
        self, batch: list[tuple[_Attempt, Completion, float]], exc: Exception, reduced: bool
    ) -> None:
        """The store refused this write for what it holds (a result too big for its
        record, a value it cannot hold), as it will on every try. Held as an outage, the
        whole batch waited a lease's length and was let go, every job run again (found
        by review, s51). So: written job by job, and the one refused alone is written
        reduced (_reduced: dead, no result, the store's reason as its error); refused
        even so, it is let go, logged, and runs again once its lease expires."""
        if len(batch) > 1:
            for index, item in enumerate(batch):
                try:
                    self._write([item], reduced)
                except BaseException:  # an outage now: the rest is held with it
                    with self._lock:
                        self._state.held[1:1] = batch[index + 1 :]
                    raise
            return
        attempt, completion, seconds = batch[0]
        if reduced:
            with self._stats_lock:
                self.stats.unwritten += 1
            log.error(
                "job %s: the store refused even its reduced outcome (%s); it runs again "
                "once its lease expires",
                attempt.job.id,
                describe(exc),
            )
            return
        log.warning(
            "job %s: the store refused this attempt's outcome (%s): written without its "
            "result, the job dead",
            attempt.job.id,
            describe(exc),
        )
        self._write([(attempt, _reduced(completion, exc), seconds)], reduced=True)

    def _written(self, attempt: _Attempt, completion: Completion) -> bool:
        """Did an earlier write of this held completion go through, though it raised?
        Then the store refuses the rewrite (the job left `running` by that very write),
        which is no lost lease: the job finished once and will not run again. It did
        if the job is in the completion's state after this attempt, with its error
        (a reap of a lapsed lease writes its own error; only a finish succeeds)."""
        try:
            job = self.store.get(completion.job_id)
        except Exception:  # unreadable now: counted as lost, as before
            return False
        return (
            job is not None
            and job.attempts == attempt.job.attempts
            and job.state is completion.state
            and (job.state is JobState.SUCCEEDED or job.last_error == completion.error)
        )

    def _write_failed(self, attempt: _Attempt, exc: BaseException) -> None:
        """A pool thread's write of `attempt` failed and was held: an outage, unless the
        dispatcher has written it since. Checked under the lock the dispatcher takes
        the held list with: a thread descheduled between its failed write and this
        call began a second outage after the store was back ("store unavailable"
        said twice for one outage, now and then, on a loaded machine)."""
        with self._lock:
            if any(held is attempt for held, _, _ in self._state.held):
                self._outage_failed(exc)
                return
        if not is_store_error(exc):  # not the write's: a middleware's after_attempt
            log.error("could not record %s", attempt.job.id, exc_info=exc)

    def _holding(self) -> int:
        """Completions not yet written: held from an outage or waiting in the outbox."""
        with self._lock:
            return len(self._state.held) + len(self._state.outbox)

    def _flush_riding(self, bound: float, deadline: float | None = None) -> set[str]:
        """Write what is held and waiting, retrying a store outage for up to `bound`
        seconds (the serverless shapes: a lease's length; a stop: stop_flush_seconds),
        and never past FLUSH_MARGIN before `deadline` (a Lambda invocation's: killed
        mid-wait, it could not say which outcomes it let go, and its SQS messages
        were neither acknowledged nor handed back).
        What is still unwritten then is let go, each job logged (outcome_unwritten):
        no other worker took them, they are still `running` under this worker's lease
        and run again once it expires, which at-least-once delivery allows. Returns
        the ids of the jobs let go."""
        started = time.monotonic()
        give_up: float | None = None
        refused: BaseException | None = None
        while True:
            try:
                self._flush()
                return set()
            except Exception as exc:
                now = time.monotonic()
                if is_fatal(exc):
                    log.error("the store refuses this worker: %s", exc)
                    refused = exc
                    break
                delay = self._outage_failed(exc)
                if give_up is None:
                    give_up = now + bound
                    if deadline is not None:
                        give_up = min(give_up, deadline - FLUSH_MARGIN)
                if self._stop.is_set():  # asked to stop: a few seconds, not a lease
                    give_up = min(give_up, now + self.config.stop_flush_seconds)
                if now >= give_up:
                    break
                time.sleep(min(delay, give_up - now))
        return self._let_go_unwritten(time.monotonic() - started, refused)

    def _let_go_unwritten(self, waited: float, refused: BaseException | None = None) -> set[str]:
        """Give up on what is held and waiting (see _flush_riding); the ids let go.
        `refused`: the store refused this worker (store_outage.is_fatal, said already
        where the worker stopped) rather than being unavailable."""
        with self._lock:
            batch = self._state.held + self._state.outbox
            self._state.held, self._state.outbox = [], []
        if not batch:
            return set()
        ids = ", ".join(attempt.job.id for attempt, _, _ in batch)
        if refused is None:
            log.error(
                "store still unavailable after %gs; %d outcomes not written (their jobs "
                "come back when their leases expire): %s",
                round(waited, 1),
                len(batch),
                ids,
            )
        else:
            # Found by a chaos run (s49, a DynamoDB table deleted under the worker): this
            # said "store still unavailable after 5s" (no wait was made: a refusal ends
            # the tries) and that the jobs come back, which they do not from a store
            # that lost them.
            log.error(
                "%d outcome%s not written: the store refused them (the reason the worker "
                "stopped); their jobs run again when their leases expire only if the "
                "store still holds them: %s",
                len(batch),
                "" if len(batch) == 1 else "s",
                ids,
            )
        self._unwritten(batch, refused is not None)
        return {attempt.job.id for attempt, _, _ in batch}

    def _unwritten(
        self, batch: list[tuple[_Attempt, Completion, float]], refused: bool = False
    ) -> None:
        """Say, per job, that its outcome was not written because the store was
        unavailable (or `refused` this worker). Not through after_flush, where a
        refusal reads as a lost lease: no other worker took these jobs, they are still
        `running` under this worker's lease, and come back when it expires (a reap,
        which spends the attempt), if the store still holds them."""
        with self._stats_lock:
            self.stats.unwritten += len(batch)
        for attempt, completion, seconds in batch:
            job = attempt.job
            then = (
                "it runs again once its lease expires"
                if job.attempts < job.max_attempts
                else "it was the last attempt, so the job is dead once its lease expires"
            )
            why = "the store is unavailable"
            if refused:
                why = "the store refused it (the reason the worker stopped)"
                then = f"if the store still holds the job, {then}"
            try:
                job_event(
                    logging.WARNING,
                    "outcome_unwritten",
                    job,
                    f"job outcome_unwritten: {why}, so this attempt's "
                    f"outcome ({completion.state.value}) could not be written; {then}",
                    outcome=completion.state.value,
                    error=completion.error,
                    duration_ms=round(seconds * 1000, 3),
                )
            except Exception:
                log.warning("the outcome of %s could not be written", job.id)

    def _wait_for_events(self, timeout: float) -> None:
        with self._lock:
            waiting = len(self._state.outbox)
            if waiting >= self.config.batch_size:
                return
            if waiting:
                # A completion landed before this wait began, so its wake-up has
                # passed: collect a batch for flush_delay at most, not the timeout.
                timeout = min(timeout, self.config.flush_delay)
            self._events.wait(timeout)

    def _renew_leases_if_due(self) -> None:
        """Renew what is due, at most once every lease/6 (the cadence _next_renewal_in
        plans the dispatcher's waits by)."""
        if time.monotonic() - self._last_lease_check > self.config.lease_seconds / 6:
            self._extend_leases()
            self._last_lease_check = time.monotonic()

    def _outage_pause(self, exc: BaseException) -> float:
        """The wait after a failed store call: the outage's backoff (up to
        store_outage.CAP, 5 s), but no later than the next lease renewal while this
        worker holds leases a renewal can still keep. A backoff longer than a short lease
        let a running handler's lease lapse while the store still answered renewals, and
        another worker ran the job beside it (tests/test_chaos_s55_renew_in_outage.py).
        Never under lease/6: a renewal the store refuses leaves its lease due, and the
        worker must not spin. A lease already run out is not waited for: its handler
        was told (LeaseCancel), and trying sooner would only race the claim that reaps
        it with this attempt's outcome."""
        pause = self._outage_failed(exc)
        renewal = self._next_renewal_in(lapsed=False)
        if math.isinf(renewal):
            return pause
        return min(pause, max(renewal, self.config.lease_seconds / 6))

    def _outage_failed(self, exc: BaseException) -> float:
        """Note a failed store call with the outage (said once); the pause before the
        next try. Once stopping, the line says what the stop does rather than "waits it
        out": a worker stopped while another process held the SQLite file's write lock
        said that, then exited."""
        stopping = None
        if self._stop.is_set():
            stopping = (
                "it waits for running handlers (each up to its timeout), tries held "
                f"results for {self.config.stop_flush_seconds:g}s more, then exits"
            )
        return self.outage.failed(exc, self._holding(), stopping)

    def _next_renewal_in(self, lapsed: bool = True) -> float:
        """Seconds until a held lease is due for renewal (RENEW_LEFT of it left, as
        _extend_leases renews), but not before the next look at leases may run (one
        every lease/6). Without it an idle dispatcher woken just before a lease's half
        slept on to about its end (idle_poll is 1 s, half of the shortest lease), and
        another worker's claim reaped the job while its handler ran
        (tests/test_chaos_s47_short_lease.py). `lapsed=False`: only leases that have
        not run out yet, which a renewal can still keep."""
        now = self.store.clock.now()
        with self._lock:
            state = self._state
            held = [*state.running.values(), *state.inbox, *state.lingering.values()]
        ends = [
            a.lease_expires_at
            for a in held
            if not a.lost and a.lease_expires_at and (lapsed or a.lease_expires_at > now)
        ]
        if not ends:
            return math.inf  # no lease to renew
        left = self.config.lease_seconds * RENEW_LEFT
        due = (min(ends) - now).total_seconds() - left
        spacing = self._last_lease_check + self.config.lease_seconds / 6 - time.monotonic()
        return max(due, spacing + 0.001, 0.0)

    def _next_deadline_in(self) -> float:
        with self._lock:
            deadlines = [a.deadline for a in self._state.running.values() if a.deadline]
        if not deadlines:
            return self.config.idle_poll
        return max(0.0, min(deadlines) - time.monotonic())

    # -- public shapes -------------------------------------------------------
    def _give_way_if_quick(self) -> None:
        """Before a write of start marks: let the pool threads that are ready join it,
        when handlers are quick enough for some to be (chalicelib/start_marks.py)."""
        if self._busy_seconds < QUICK_HANDLER_SECONDS:
            give_way()

    def _depth(self) -> int:
        """Jobs to hold per pool thread: one running plus ~PREFETCH_SECONDS of waiting work.
        Only the running one under a rate limit (so a claimed job starts at once), and
        for jobs that take PREFETCH_SECONDS or more: one waiting behind such a job
        waits for it, `running` and out of every other worker's reach."""
        if self._no_prefetch:
            return 1
        ahead = int(PREFETCH_SECONDS / max(self._busy_seconds, 1e-6))
        if ahead == 0:
            return 1
        most = max(2, self.config.batch_size // self.config.concurrency)
        return max(2, min(most, 1 + ahead))

    def _step(self, depth_limit: int, hold_wave: bool = False) -> int:
        """One dispatcher turn: record timeouts, write completions, claim if there is room.

        depth_limit caps the jobs held per pool thread (0: claim nothing); hold_wave
        (process()) leaves a wave's first completions in the outbox (see _flush).
        """
        self._reap_timeouts()
        self._claim_due = True  # unless this step's own claim leaves no room (below)
        quick = 0
        if self._announced and self._fair and depth_limit > 0 and not self._stop.is_set():
            # New work was announced under fair turns: take a few jobs now, before
            # writing completions and whatever the prefetch room, so a newcomer
            # tenant's job waits for neither a batch of completions nor a full claim
            # (the claim gives it the next turn; _queue_fairly the next free thread).
            self._announced = False
            want = min(self.config.concurrency, self.config.batch_size)
            if self._no_prefetch:
                with self._lock:
                    want = min(want, self.config.concurrency - self._in_flight())
            quick = self._claim(want)
        flushing = self._flush_beside(hold_wave) if self._overlap else None
        if flushing is None:
            try:
                self._flush(hold_wave)
            except Exception:
                # A write of held completions that fails ends the step: the leases are
                # looked at all the same, or none was renewed while finishes failed
                # (tests/test_chaos_s55_renew_in_outage.py).
                self._renew_leases_if_due()
                raise
        try:
            self._renew_leases_if_due()
            if depth_limit <= 0 or self._stop.is_set():
                return quick
            concurrency = self.config.concurrency
            with self._lock:
                depth = min(depth_limit, self._depth())
                in_flight = self._in_flight()
            capacity = concurrency * depth
            room = capacity - in_flight
            # Claim in useful batches: wait until half the capacity is free unless idle
            # (without prefetch a thread freed is a thread idle: claim for it at once).
            batch = 1 if depth == 1 else max(1, capacity // 2)
            if room >= batch or (room > 0 and not in_flight):
                want = min(room, self.config.batch_size)
                claimed = self._claim(want)
                self._claim_due = claimed == want and room - claimed >= batch
                return quick + claimed
            return quick
        finally:
            if flushing is not None:
                flushing.result()  # one flush at a time; its errors surface here

    def _flush_beside(self, hold_wave: bool) -> Future[int] | None:
        """Write the outbox on the flusher thread, so the claim that follows overlaps it.
        None when there is nothing to write there, a wave's held finishes included: the
        caller's own _flush then writes what an outage held, with no hop to a thread."""
        with self._lock:
            if not self._state.outbox or (hold_wave and self._wave_held()):
                return None
        if self._flusher is None:
            self._flusher = ThreadPoolExecutor(
                1, thread_name_prefix="spool-flush", initializer=logs.inherited_pool()
            )
        return self._flusher.submit(self._flush, hold_wave)

    def _idle(self, held: bool = True) -> bool:
        """Nothing running or waiting to be written; held=False: completions held from an
        outage do not count (the caller rides them out afterwards, bounded)."""
        with self._lock:
            state = self._state
            return not self._in_flight() and not state.outbox and not (held and state.held)

    def drain(self, deadline: float | None = None) -> WorkerStats:
        """Run due jobs until none are left or the deadline (a time.monotonic() value) nears.

        Claims only while the longest handler timeout still fits before the
        deadline, and holds k jobs per pool thread only while k such timeouts
        (k + 1 beyond two) fit, so everything it holds is finished (or timed out
        and recorded) before it returns. One exception: a timed-out job under a
        concurrency limit whose handler still runs stays held (_abandon), recorded
        by a later drain once the handler returns, or by close().
        """
        self._ensure_threads()
        self._beat(force=True)
        longest = self.registry.max_timeout() + DRAIN_MARGIN
        while True:
            self._beat()
            if deadline is None:
                limit = self.config.batch_size
            else:
                fit = int((deadline - time.monotonic()) // longest)
                limit = fit if fit <= 2 else max(2, fit - 1)
            try:
                if self._step(limit):
                    if not self._claim_due:
                        self._wait_for_events(min(self._next_deadline_in(), 0.05))
                    continue
                if self._idle():
                    if self._claimed_nothing(limit):
                        break
                    continue
            except Exception as exc:
                # Jobs still run here: wait for them, trying the store again meanwhile.
                # Nothing running: end the drain, writing what is held (bounded below),
                # or, with nothing held either, raise (the caller backs off).
                if is_fatal(exc):
                    raise
                delay = self._outage_pause(exc)
                with self._lock:
                    running = self._in_flight()
                if not running:
                    if self._holding():
                        break
                    raise
                self._wait_for_events(min(self._next_deadline_in(), delay))
                continue
            self._wait_for_events(min(self._next_deadline_in(), 0.05))
        self._flush_riding(self.config.lease_seconds, deadline)
        return self.stats

    def _claimed_nothing(self, limit: int) -> bool:
        """Idle: does one more step (which, with nothing in flight, claims) find nothing?

        Idle after a step is not the end of the work: the step may have skipped its
        claim because the pool was full, and those jobs then finished and were written
        (by the flusher thread) before the idle check. On Postgres that ended 2 drains
        in 25 with thousands of jobs still queued. Only an empty claim ends a drain."""
        if limit <= 0 or self._stop.is_set():
            return True
        return self._step(limit) == 0

    def process(
        self,
        job_ids: Sequence[str],
        deadline: float | None = None,
        on_claimed: Callable[[Mapping[str, str]], None] | None = None,
        held_by: dict[str, Hold] | None = None,
    ) -> dict[str, str]:
        """Run specific jobs (SQS delivery). Returns job id -> outcome.

        Outcomes: succeeded / retrying / dead (finished here), held (a limit held it
        back: return the message with a delay), skipped (not due,
        already taken or finished: the message is redundant), or deferred (not
        claimed because the deadline left too little time: redeliver it).
        `on_claimed`, when given, is called once the claim is made, before the claimed
        jobs run, with the outcomes already known (held, skipped, deferred), so a held
        job's message can go back to the queue without waiting for the others.
        """
        self._beat()
        outcome: dict[str, str] = {}
        wanted = list(job_ids)
        if deadline is not None:
            outcome = self._defer_what_cannot_finish(wanted, deadline)
            wanted = [job_id for job_id in wanted if job_id not in outcome]
            if not wanted:
                return outcome
        self._ensure_threads()
        with self._claiming():
            jobs, holds = self._claim_store(len(wanted), ids=wanted)
        claimed = {j.id for j in jobs}
        held = {h.job_id for h in holds}
        if held_by is not None:
            held_by.update((h.job_id, h) for h in holds if h.job_id in wanted)
        for job_id in wanted:
            if job_id not in claimed:
                # Held back by a limit: the caller returns it to the queue for later.
                outcome[job_id] = "held" if job_id in held else "skipped"
        if on_claimed is not None:
            on_claimed(dict(outcome))
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
        recorded: dict[str, str] = {}

        class _Collect(Middleware):
            def after_flush(
                self, completions: Sequence[Completion], applied: Sequence[bool]
            ) -> None:
                for completion, ok in zip(completions, applied, strict=True):
                    # A refused finish means the lease was lost: someone else owns the job.
                    recorded[completion.job_id] = completion.state.value if ok else "skipped"

        collector = _Collect()
        self.middleware.append(collector)
        try:
            while not self._idle(held=False):
                pause = 0.05
                try:
                    self._step(0, hold_wave=True)
                except Exception as exc:  # the wave's jobs still run: wait them out
                    if is_fatal(exc):
                        raise
                    pause = self._outage_pause(exc)
                if self._in_flight():
                    with self._lock:
                        self._events.wait(min(self._next_deadline_in(), pause))
            unwritten = self._flush_riding(self.config.lease_seconds, deadline)
        finally:
            self.middleware.remove(collector)
        for job in jobs:
            # Dropped before it started (lease lost while waiting): not ours any more.
            outcome[job.id] = recorded.get(job.id, "skipped")
        for job_id in unwritten:  # ran, but the store never took its outcome
            outcome[job_id] = "unwritten"
        return outcome

    def _wave_held(self) -> bool:
        """Under the lock, in process(): keep the outbox's finishes while others of the
        wave run, so the whole wave is one store write, but no longer than WAVE_HOLD
        seconds after the first ended (so its lease cannot lapse and its status is not
        stale for long)."""
        outbox = self._state.outbox
        if not outbox or not self._in_flight():
            return False
        oldest = min(a.started + seconds for a, _, seconds in outbox)
        return time.monotonic() - oldest < WAVE_HOLD

    def _defer_what_cannot_finish(self, job_ids: list[str], deadline: float) -> dict[str, str]:
        """Job id -> "deferred" for each job whose own timeout does not fit before the deadline.

        Each job is judged by its own handler's timeout, not the longest one
        registered: one 900 s handler must not hold back an echo. When even the
        longest timeout fits, nothing is read; otherwise each job is read once to
        learn its type (its timing only, `job_timings`: never its payload or result). A
        job that cannot be read is left to the claim (which
        skips what is gone or not due, and buries a damaged record); an unknown
        type is claimed and buried. So is a job no claim would take (finished, not
        due, or running under another worker's live lease): its message is redundant
        however little time is left, and deferring it only handed it back to count
        another receive. A running job whose lease has lapsed is claimable (a claim
        reaps it and runs it again), so it is deferred like a waiting one.
        """
        left = deadline - time.monotonic() - DRAIN_MARGIN
        if self.registry.max_timeout() <= left:
            return {}
        deferred: dict[str, str] = {}
        now = self.store.clock.now()
        # Type, state and times only: never a payload or result (on DynamoDB, an S3 GET
        # each) to decide whether there is time to run the job.
        timings = job_timings(self.store, job_ids)
        for job_id in job_ids:
            job = timings.get(job_id)  # absent: gone, or a damaged record the claim buries
            if job is None or not _claimable(job, now):
                continue
            try:
                timeout = self.registry.get(job.type).timeout
            except UnknownJobType:
                continue
            if timeout > left:
                deferred[job_id] = "deferred"
        return deferred

    def run(self, burst: bool = False) -> WorkerStats:
        """Work until stop() (or, with burst, until nothing is due), then finish what is held."""
        if burst:
            stats = self.drain(None)
            sign_off(self.store)
            self._ended()
            return stats
        notifier: Any = getattr(self.store, "notifier", None)
        self._notifier = notifier
        if notifier is not None:
            # The bridge subscribes before the first claim, so no wake-up is missed.
            subscribed = threading.Event()
            logs.inherited_thread(
                self._bridge, args=(notifier, subscribed), name="spool-wake"
            ).start()
            subscribed.wait()
        # The pool last: a process short of threads (or of address space for their
        # stacks) runs with fewer pool threads (_ensure_threads), but not without its
        # bridge, whose start, after a pool that took the last of the room, stopped it.
        self._ensure_threads()
        fatal: BaseException | None = None
        self._beat(force=True)
        while not self._stop.is_set():
            self._beat()
            with self._lock:
                self._woken = False
            try:
                if self._step(self.config.batch_size):
                    self._back()
                    continue
                # Completions already waiting: no need to ask the store how long to idle.
                waiting = self._state.outbox or self._state.held  # a pool thread's, held
                timeout = self.config.flush_delay if waiting else self._idle_timeout()
                self._back()
            except Exception as exc:
                if is_fatal(exc):
                    # Waiting cannot fix it (store_outage.is_fatal): finish what is held,
                    # then end with it.
                    fatal = fatal_error(exc)
                    log.error("the worker stops: %s", fatal)
                    break
                # Any other store error is an outage, never the end of the worker: said
                # once, then tried again with backoff. Results that could not be written
                # are held (_write) and written first when the store is back.
                timeout = self._outage_pause(exc)
            self._sleep(timeout, outage=self.outage.down)
        self._shutdown()
        sign_off(self.store, self.outage, said=fatal)
        self._ended()  # the store may serve on (spool serve, a test) after this worker
        if fatal is not None:
            raise fatal
        return self.stats

    def _back(self) -> None:
        """A step went through: the outage is over, unless completions are still held
        (a pool thread's write failed after this step's flush): the store is back when
        it takes what this worker holds, not when it answers a claim."""
        with self._lock:  # held: a pool thread's failed write lands between check and say
            if not self._state.held:
                self.outage.recovered()

    def _wake(self) -> None:
        """Under the lock: tell the dispatcher there is something to do.

        The flag outlives the notify: a dispatcher that is not waiting yet (it is
        querying the store for how long to sleep) sees it before it waits, so the
        wake-up is not lost."""
        self._woken = True
        self._events.notify()

    def _sleep(self, timeout: float, outage: bool = False) -> None:
        """Wait for a wake-up, deciding how long in the same critical section as the wait.

        The timeout was computed outside the lock (it asks the store when work falls
        due); a completion that landed meanwhile found nobody waiting. Checking the
        wake-up flag and the outbox here closes that gap: pending completions cut the
        wait to flush_delay instead of leaving finished jobs `running` until the idle
        poll. During an outage only a stop cuts the backoff short: a wake-up or a
        completion would only meet the same refusal sooner."""
        with self._lock:
            if self._stop.is_set():
                return
            if outage:
                self._events.wait_for(self._stop.is_set, timeout)
                return
            if self._woken:
                return
            if self._state.outbox or self._state.held:
                timeout = min(timeout, self.config.flush_delay)
            self._events.wait(timeout)

    def _idle_timeout(self) -> float:
        timeout = min(self.config.idle_poll, self._next_deadline_in(), self._next_renewal_in())
        due = self.store.next_due_at(self.config.queues)
        if due is not None:
            until = (due - self.store.clock.now()).total_seconds()
            timeout = min(timeout, max(0.0, until))
        if self._held:
            # Everything due is held back: asking again at once would spin.
            timeout = max(timeout, min(HOLD_POLL, self._next_deadline_in()))
        return max(0.001, timeout)

    def _bridge(self, notifier: Any, subscribed: threading.Event) -> None:
        """Turn store notifications into dispatcher wake-ups.

        A first wait refused (no descriptors left, the wake-up folder taken away) ends
        the bridge with a line, not a traceback: the dispatcher polls every idle_poll
        without it, as it does between wake-ups anyway."""
        try:
            notifier.wait(0)
        except (OSError, ValueError) as exc:
            log.warning(
                "the worker gets no wake-ups (%s); it polls every %ss instead",
                exc,
                self.config.idle_poll,
            )
            return
        finally:
            subscribed.set()
        while not self._stop.is_set():
            try:
                woke = notifier.wait(self.config.idle_poll)
            except (OSError, ValueError):
                return  # the store (and its notifier) was closed under us
            if woke and not self._claim_announced():
                with self._lock:
                    self._announced = True
                    self._wake()

    def _claim_announced(self) -> bool:
        """On the bridge's thread, under fair turns: claim a few jobs the moment new work
        is announced, instead of leaving it to the dispatcher's next step.

        The dispatcher learns of an announcement only between its steps, and a step
        (a batch of completions, then a claim of up to batch_size) ran to its end first:
        with one tenant's backlog draining on SQLite, that was the largest part of a
        newcomer tenant's wait (a few ms at p90, up to the step's whole length at p99).
        The bridge is awake already; its claim waits only for the store write in progress.
        The claim's turns give the newcomer its job, _queue_fairly the next free thread.
        False (the dispatcher's quick claim does it, as without fair turns) when not
        under fair turns, under a rate limit (whose accounting wants no prefetch beyond
        the free threads, which the dispatcher counts), once stopping, when the worker
        already holds `concurrency` jobs beyond its prefetch, or if the store refused
        (the dispatcher meets the trouble too, and rides the outage out)."""
        if not self._fair or self._no_prefetch:
            return False
        with self._side_claim:
            if self._stop.is_set() or self._side_claims_closed:
                return False
            concurrency = self.config.concurrency
            with self._lock:
                # At most `concurrency` beyond the prefetch: a stream of adds announces
                # each one, and the bridge must not hoard a job per announcement.
                room = concurrency * (self._depth() + 1) - self._in_flight()
            want = min(concurrency, self.config.batch_size, room)
            if want <= 0:
                return False
            try:
                self._claim_store_accept(want)
            except Exception:
                return False
        return True

    def _shutdown(self) -> None:
        """Finish what is held: nothing new is claimed once stop is set. Running handlers
        are waited for (each up to its timeout); once none runs, results the store will
        not take are tried for stop_flush_seconds more, then let go, each named in the
        log (their leases lapse and they run again: at-least-once)."""
        with self._side_claim:  # waits for a claim the bridge has begun
            self._side_claims_closed = True
        give_up: float | None = None
        refused: BaseException | None = None
        tried_from: float | None = None  # the first failed write once nothing ran
        while True:
            self._reap_timeouts()
            pause = 0.05
            try:
                # The handlers waited for keep their leases: without renewals here, one
                # running past its lease was told to stop (ctx.cancelled) and another
                # worker ran the job beside it (tests/test_chaos_s55_renew_in_outage.py).
                self._renew_leases_if_due()
                self._flush()
            except Exception as exc:
                fatal = is_fatal(exc)
                refused = exc if fatal else None
                pause = 0.05 if fatal else self._outage_pause(exc)
                with self._lock:
                    running = self._in_flight()
                if not running:
                    now = time.monotonic()
                    if give_up is None:
                        tried_from = now
                        give_up = now + self.config.stop_flush_seconds
                    if now >= give_up or fatal:
                        break
                    pause = min(pause, give_up - now)
            if self._idle():
                break
            self._wait_for_events(min(self._next_deadline_in(), pause))
        try:
            self.close()
        finally:
            waited = 0.0 if tried_from is None else time.monotonic() - tried_from
            self._let_go_unwritten(waited, refused)

    def stop(self, hurry: bool = True) -> None:
        """Stop claiming and finish what is held. Safe to call from a signal handler.
        `hurry` False: leave the store's deadlines alone (a worker replaced, not the
        process stopping: another worker may share the store)."""
        self._stop.set()
        with self._lock:
            self._events.notify_all()
        interrupt = getattr(self._notifier, "interrupt", None)
        if interrupt is not None:
            interrupt()  # let the wake-up bridge see the stop now, not at its next poll
        if hurry:
            self._hurry(self.config.stop_flush_seconds)

    def calm(self) -> None:
        """The store's usual deadlines again, once this stopped worker is done with it
        (run() does it itself; drain()'s callers, which outlive it, call this)."""
        self._hurry(None)

    def _hurry(self, seconds: float | None) -> None:
        """Give each store call from now on, and those in flight, at most `seconds`
        (None: the store's own deadline again), where the store can (Postgres).

        A call waiting behind a lock (an admin's LOCK TABLE) held a stop for the
        store's whole timeout, twice (a claim, then the read asking whether it had
        committed): 57 s. Handlers still run to their own timeouts; only the store
        calls are hurried, and a result one of them cannot write in time is let go
        as any other at a stop (its job runs again once its lease lapses)."""
        hurry = getattr(self.store, "hurry", None)
        if hurry is None:
            return
        with self._hurry_lock:
            if seconds is not None and self._ran_out:
                return
            hurry(seconds)

    def _ended(self) -> None:
        """run() is over: the store's usual deadlines again, for good. A stop() racing
        the end (its hurry after run()'s calm: the run saw the stop flag first) left a
        store that outlives the worker hurried (tests/test_chaos_s60c_stop_under_lock.py
        once found 5 s deadlines on it, under load)."""
        with self._hurry_lock:
            self._ran_out = True
        self._hurry(None)

    def close(self) -> None:
        """Stop the pool threads, once the timeouts this worker still holds are written."""
        try:
            self._write_lingering()
        finally:
            with self._lock:
                self._state.closing = True
                self._work.notify_all()
        flusher, self._flusher = self._flusher, None
        if flusher is not None:
            flusher.shutdown(wait=True)

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()


def _call_here(spec: HandlerSpec, payload: Any, ctx: JobContext) -> Any:
    """Call the handler; a child it forked that comes back here ends here
    (chalicelib/forked_child.py), never running on as a worker with no dispatcher."""
    watch = forked_child.Watch()
    try:
        result = spec.call(payload, ctx)
    except BaseException as exc:
        if watch.forked():
            forked_child.leave(exc)
        raise
    if watch.forked():
        forked_child.leave(None)
    return result


def _on_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


RESULT_TYPES_HINT = (
    "return a dict, list, str, number, bool or None, or a pydantic model as the whole "
    "result; convert anything else first: a datetime with .isoformat(), a set with "
    "list(), a model inside a list or dict with .model_dump(mode='json')"
)


_HUGE_INT_ERROR = (
    f"result is not JSON: it holds an integer of more than {READABLE_INT_DIGITS} digits "
    "(return it as a string)"
)


def _why_not_json(result: Any, exc: Exception) -> str:
    """The encoder's refusal in the terms of whoever wrote the handler."""
    if is_circular(result):
        return CIRCULAR
    if isinstance(exc, RecursionError):
        return f"its {NESTED_TOO_DEEP}"
    if not is_finite_json(result):
        return "it holds NaN or Infinity (return null or a string instead)"
    if isinstance(exc, ValueError) and str(exc).startswith("Out of range float"):
        # is_finite_json looks at values; the encoder refuses a non-finite key too.
        return "a dict's key is NaN or Infinity (use a string key instead)"
    if isinstance(exc, ValueError) and "integer string conversion" in str(exc):
        # Python's advice (sys.set_int_max_str_digits) would not reach the API's readers.
        digits = sys.get_int_max_str_digits()
        return f"it holds an integer of more than {digits} digits (return it as a string)"
    if isinstance(exc, TypeError):
        # The encoder names the type but not the fix: the handler's author needs both.
        return f"{exc} ({RESULT_TYPES_HINT})"
    return str(exc)


def _surrogate_error(place: list[str | int]) -> str:
    # Cut in the middle as the API's refusals are: a result nested 200 deep made a
    # dead job's error, and every screen showing it, 200 steps long.
    shown = shown_path(place) if place else "the result itself"
    return (
        "result is not JSON: a string in it holds an unpaired UTF-16 surrogate "
        f"(\\ud800-\\udfff), which is no character, at {shown}"
        " (return text, or encode bytes as base64)"
    )


def _describe(exc: BaseException, prefix: str = "") -> str:
    """The job's `last_error`: masked as its attempt's error is (a message quoting a
    database URL must not show its password on /status), within the stores' limit,
    each lone surrogate in it made U+FFFD (no UTF-8 store or JSON answer holds one)."""
    text = exception_text(exc)  # its __str__ may fail, with anything: not the pool thread's end
    name = error_type_name(exc)
    said = error_text(text, f"{prefix}{name}: ") if text else f"{prefix}{name}"
    return replaced_surrogates(said)


def sign_off(
    store: JobStore, outage: Outage | None = None, said: BaseException | None = None
) -> None:
    """This process stopped working cleanly (`spool worker`, a burst, `spool serve`'s
    emulated worker): no longer counted live (spool top, spool_workers_live, the
    no-live-workers alert), instead of for SPOOL_WORKER_LIVE_SECONDS after, and its
    row leaves the store instead of staying for good. Not tried during an outage:
    it would fail too, after the store's whole timeout, lengthening the stop.

    `said`: the error the worker stopped on, already logged. A sign-off the store
    refuses (store_outage.is_fatal: a table lost, a schema of another release,
    refused credentials) is no outage: its beat may be gone with the table, so
    "it drops out in a minute" was not true, and the whole reason came a third
    time (found by a chaos run, s49)."""
    forget = getattr(store, "forget_worker", None)
    if forget is None:
        return
    if outage is not None and outage.down:
        log.warning("not signed off: the store is unavailable (it drops out in a minute)")
        return
    try:
        with lost_write("the sign-off", "if it was not, the worker drops out in a minute"):
            forget(worker_id.process())
    except Exception as exc:
        if not is_fatal(exc):
            log.warning("could not sign this worker off (it drops out in a minute): %s", exc)
        elif said is not None and str(exc) == str(said):
            log.warning("not signed off: the store refused it too, for the reason above")
        else:
            log.warning("not signed off: the store refused it: %s", exc)


# The most of the store's reason, and of the first error, a reduced outcome keeps.
REFUSAL_CHARS = 500


def _reduced(completion: Completion, exc: BaseException) -> Completion:
    """An outcome the store refused, in a form it takes: dead (a run again would make
    the same result, or the same error, and be refused again), no result, and an error
    in plain ASCII naming the store's reason and the outcome it refused."""
    reason = ascii(describe(exc))[1:-1][:REFUSAL_CHARS]
    error = (
        f"the store refused this attempt's outcome ({completion.state.value}): {reason}; "
        "the job is dead so it does not run again"
    )
    if completion.error is not None:
        error += f"; its error was: {ascii(completion.error)[1:-1][:REFUSAL_CHARS]}"
    attempt = completion.attempt
    if attempt is not None:
        attempt = replace(attempt, outcome="dead", error=error, traceback=None)
    return Completion(
        completion.job_id, completion.lease_token, JobState.DEAD, error=error, attempt=attempt
    )

"""The emulated worker pool: app.py's own scheduled handler, invoked promptly.

On AWS, EventBridge invokes `drain_due` once a minute (and SQS invokes
`run_jobs` per message). Locally the emulator invokes the same `drain_due`
handler with the same CloudWatch "Scheduled Event" shape (chalice's test event
generator's, built here: see scheduled_event) and a Lambda context whose
deadline is the function's timeout; but instead of waiting for the next
minute it invokes again as soon as work arrives (the store's notifier wakes
it) or falls due (a retry's
backoff or a delay ends, or a lease expires). So the code path run offline is
exactly the deployed scheduled path: handler -> events.handle_schedule ->
worker.drain(deadline).

SQS delivery is not emulated by `spool serve`; tests drive `run_jobs` with
chalice's SQS event generator (`sqs_event` below builds the same shape).
"""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime
from typing import Any

from chalice.app import Chalice
from chalice.local import LambdaContext

from chalicelib import events
from chalicelib.runtime import Runtime
from chalicelib.store_outage import fatal_error, is_fatal
from chalicelib.webhooks.runner import DeliveryThread, start_thread
from chalicelib.worker import HOLD_POLL, sign_off

log = logging.getLogger("spool.emulator")

SCHEDULE_FUNCTION = "drain_due"
SQS_FUNCTION = "run_jobs"
# Lambda's own maximum; drain claims only what fits before this deadline.
FUNCTION_TIMEOUT_MS = 900_000
IDLE_CHECK = 0.5  # seconds between looks at the store when no wake-up arrives


def scheduled_event(app: Chalice, function_name: str = SCHEDULE_FUNCTION) -> dict[str, Any]:
    """The event EventBridge sends a scheduled Lambda: chalice's TestEventsClient's
    generate_cw_event shape (tests/test_events.py compares the two), built here.
    chalice.test imports chalice's command line (inquirer, blessed, yaml, its deployer):
    about 0.2 s of every `spool serve` start went to loading it for this dict."""
    return {
        "version": 0,
        "id": "7bf73129-1428-4cd3-a780-95db273d1602",
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": "123456789012",
        "time": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "region": "us-east-1",
        "resources": [f"arn:aws:events:us-east-1:123456789012:rule/{app.app_name}-{function_name}"],
        "detail": {},
    }


def sqs_event(app: Chalice, job_ids: list[str], queue: str = "spool-jobs") -> dict[str, Any]:
    """The event SQS sends a Lambda, one record per job id; messageIds are made unique.
    Tests call it, never `spool serve`: chalice.test (heavy, see scheduled_event) is
    loaded here, on the first call."""
    from chalice.test import TestEventsClient

    bodies = [f'{{"id": "{job_id}"}}' for job_id in job_ids]
    event: dict[str, Any] = TestEventsClient(app).generate_sqs_event(bodies, queue_name=queue)
    for index, record in enumerate(event["Records"]):
        record["messageId"] = f"msg-{index}-{job_ids[index]}"
    return event


def context(function_name: str, timeout_ms: int = FUNCTION_TIMEOUT_MS) -> LambdaContext:
    """The context of an invocation this process makes itself (the emulator, the local
    SQS poller): the function's deadline, and no aws_request_id. chalice's makes up a
    uuid4, which the events path took for a Lambda invocation's: the built-in worker
    named itself "lambda:<uuid>" in attempts and put aws_request_id on every line of
    the drain, for a Lambda that never ran (found by a chaos run, s48/s49). Without
    one the worker is host:pid:tag, as `spool worker` is."""
    return _StoppableContext(function_name, timeout_ms)


class _StoppableContext(LambdaContext):
    """An invocation's context with no time left once `stopping` is set (context()'s
    have no such event: their time runs out only at the deadline).

    events.shutdown() stops the worker it keeps and drops it; an invocation past its
    start but not yet at its drain (firing periodic ticks: after a start that is every
    due tick) then built a new worker and drained the whole backlog, its deadline the
    function's 15 minutes. SIGTERM as `spool serve` printed its banner ran 200 queued
    jobs after "stopping" (s59); a backlog longer than stop's 30 s join left jobs
    `running` as the process exited. With no time left, the drain claims nothing
    (worker.drain claims only what fits before its deadline), as Lambda's own would."""

    def __init__(
        self, function_name: str, timeout_ms: int, stopping: threading.Event | None = None
    ) -> None:
        super().__init__(function_name, memory_size=1024, max_runtime_ms=timeout_ms)
        self.aws_request_id = ""  # no Lambda made this invocation: see context()
        self._stopping = stopping

    def get_remaining_time_in_millis(self) -> float:
        if self._stopping is not None and self._stopping.is_set():
            return 0.0
        return super().get_remaining_time_in_millis()


def _let_go(done: Any) -> bool:
    """Whether a drain that returned let results go unwritten: it rode a store outage
    to its bound and gave up, so the store is not back (its own writes said so when
    it was). Saying "store is back" then, the next drain's failed claim said the
    outage began again: two lines per lease for as long as it lasted."""
    return isinstance(done, dict) and bool(done.get("unwritten"))


class Emulator:
    """Invokes app.py's scheduled handler whenever there may be work, in one thread."""

    def __init__(
        self, app: Chalice, runtime: Runtime, timeout_ms: int = FUNCTION_TIMEOUT_MS
    ) -> None:
        self.app = app
        self.runtime = runtime
        self.timeout_ms = timeout_ms
        self.handler = app.handler_map[SCHEDULE_FUNCTION]
        self.invocations = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._webhooks: DeliveryThread | None = None  # webhook delivery, beside the drains

    def invoke(self) -> Any:
        """One scheduled invocation, exactly as Lambda would make it."""
        self.invocations += 1
        event = scheduled_event(self.app)
        return self.handler(
            event, _StoppableContext(SCHEDULE_FUNCTION, self.timeout_ms, self._stop)
        )

    def _wait_for_work(self, notifier: Any) -> None:
        """Wait, after a drain, until there may be work: a wake-up, or the next due time.

        A job still due when a drain has returned is one that drain left: a limit held
        it back (a rate window, a slot another process holds), or it fell due as the
        drain ended. Invoking again at once, as this did, spun one core on claims that
        took nothing for as long as the limit held (18,000 in 5 s under `"2/s"`, found
        by a new user's first hour, s58). Such a look is paced as `spool worker`'s is
        (HOLD_POLL); new work still wakes the notifier at once."""
        timeout = IDLE_CHECK
        due = self.runtime.store.next_due_at()
        if due is not None:
            until = (due - self.runtime.store.clock.now()).total_seconds()
            timeout = min(timeout, until) if until > 0 else HOLD_POLL
        if notifier is not None:
            notifier.wait(timeout)
        else:
            self._stop.wait(timeout)

    def _loop(self) -> None:
        notifier = getattr(self.runtime.store, "notifier", None)
        if notifier is not None:
            try:
                notifier.wait(0)  # subscribe before the first drain, so no wake-up is missed
            except OSError as exc:
                # This thread is the server's only worker: ending here left `spool serve`
                # answering 201 for jobs nothing ran. Without wake-ups it polls instead.
                log.warning("the built-in worker gets no wake-ups (%s); it polls instead", exc)
                notifier = None
        # Shared with the drains' worker (Runtime.outage): one outage, two lines.
        outage = self.runtime.outage()
        while not self._stop.is_set():
            try:
                done = self.invoke()
                if not _let_go(done):
                    outage.recovered()
                if self._stop.is_set():
                    # Asking the store when work falls due is no use now: under a lock on
                    # its jobs table that read added a hurried call's 6 s to every stop.
                    break
                self._wait_for_work(notifier)
            except Exception as exc:
                if is_fatal(exc):
                    # The schema changed under the server, or its credentials are
                    # refused: waiting cannot fix it. The server keeps answering (its
                    # /health says what is wrong); the emulated worker stops.
                    log.error(
                        "the built-in worker stops: %s (fix it and restart spool serve)",
                        fatal_error(exc),
                    )
                    return
                # Any other error is an outage, whatever the store raised: said once
                # (a traceback a second buried the log for as long as the store was
                # down), tried again with jittered backoff up to a few seconds.
                self._stop.wait(outage.failed(exc))

    def start(self) -> None:
        self._webhooks = start_thread(self.runtime)  # first: a bad setting starts nothing
        self._thread = threading.Thread(target=self._loop, name="spool-emulator", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Stop claiming; jobs already running finish (up to their handler timeouts)."""
        self._stop.set()
        # The loop waits on the store's notifier when it has one, not on _stop: woken
        # only by new work or IDLE_CHECK, every stop of `spool serve` waited out up to
        # that much. interrupt wakes this process's waiter (a wake-up sent while the
        # loop is busy is kept for its next wait, so none is lost).
        interrupt = getattr(getattr(self.runtime.store, "notifier", None), "interrupt", None)
        if interrupt is not None:
            interrupt()
        events.shutdown()
        if self._thread is not None:
            self._thread.join(timeout)
            # The drains beat as this process: it is gone now.
            sign_off(self.runtime.store, self.runtime.outage())
        if self._webhooks is not None:
            self._webhooks.stop(timeout)

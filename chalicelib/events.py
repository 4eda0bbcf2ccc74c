"""The worker's two entry points, behind app.py's event handlers.

- `handle_sqs`: SQS delivers job ids; each message body is {"id": "..."} or the
  bare id. The ids go to worker.process() in waves no larger than its pool;
  messages whose job was deferred (too little time left for that job's own
  handler timeout) or could not be processed are reported in
  `batchItemFailures`, so SQS redelivers only those.
  With a store that delivers through SQS, deferred messages are handed back at
  once and the messages of jobs still running are kept hidden (a visibility
  heartbeat). A job a limit held back (chalicelib/limits.py) is sent again as a
  new message delayed HELD_REDELIVERY_SECONDS; without SQS delivery its message
  is reported failed and comes back after the visibility timeout.
- `handle_schedule`: a scheduled invocation first enqueues due periodic ticks
  (chalicelib/periodic.py), then drains due jobs until the Lambda
  deadline nears; with a store that delivers through SQS it instead releases
  due jobs to the queue (DynamoStore.release_due).

Both take the raw event dict and the Lambda context (only
get_remaining_time_in_millis and aws_request_id, when it has one, are used:
the request id names the worker in attempt records and goes on every log
line of the invocation), so the local emulator and tests call
them with the same shapes AWS sends. One Worker per runtime is kept between
invocations, as a warm Lambda container keeps its threads.
"""

from __future__ import annotations

import functools
import json
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

from chalicelib import logs, periodic, worker_id
from chalicelib import runtime as runtime_module
from chalicelib.runtime import Runtime
from chalicelib.worker import Worker, WorkerStats

if TYPE_CHECKING:
    from chalicelib.storage.sqs_dispatch import SqsDispatch

log = logging.getLogger("spool.events")

# Outcomes from Worker.process() that mean "deliver this message again".
REDELIVER = frozenset({"deferred"})
# A job a limit held back goes back to the queue as a fresh message this much later
# (a fresh message, so holds do not count toward the queue's maxReceiveCount and
# send a waiting job to the SQS dead-letter queue).
HELD_REDELIVERY_SECONDS = 2.0


class LambdaContext(Protocol):
    def get_remaining_time_in_millis(self) -> float: ...


_lock = threading.Lock()  # guards _cached
_run_lock = threading.Lock()  # one invocation at a time, as in one Lambda container
_cached: tuple[Runtime, Worker] | None = None


def worker_for(rt: Runtime) -> Worker:
    """The worker kept for this runtime; a replaced runtime's worker is stopped."""
    global _cached
    with _lock:
        if _cached is not None and _cached[0] is rt:
            return _cached[1]
        stale, _cached = _cached, (rt, rt.worker())
        fresh = _cached[1]
    if stale is not None:
        stale[1].stop()
        stale[1].close()
    return fresh


def shutdown() -> None:
    """Stop the kept worker: a drain in progress claims nothing more and returns
    once what it holds has finished; the next invocation builds a new worker."""
    global _cached
    with _lock:
        cached, _cached = _cached, None
    if cached is not None:
        cached[1].stop()
        with _run_lock:
            cached[1].close()


def deadline_from(context: LambdaContext | None) -> float | None:
    """The invocation's deadline as a time.monotonic() value (None: no deadline)."""
    if context is None:
        return None
    return time.monotonic() + max(0.0, float(context.get_remaining_time_in_millis())) / 1000.0


def message_job_id(body: str) -> str | None:
    """A message body is {"id": "..."} or the bare id; anything else is None."""
    text = body.strip()
    if text.startswith("{"):
        try:
            data = json.loads(text)
        except ValueError:
            return None
        value = data.get("id") if isinstance(data, dict) else None
        return value if isinstance(value, str) and value else None
    return text or None


def _records(event: Mapping[str, Any]) -> Iterable[Mapping[str, Any]]:
    records = event.get("Records")
    return records if isinstance(records, list) else []


EventHandler = Callable[[Mapping[str, Any], "LambdaContext | None"], dict[str, Any]]


def _invocation(handler: EventHandler) -> EventHandler:
    """Name the invocation while it runs: its aws_request_id becomes the worker id of
    the attempts it records ("lambda:<id>", chalicelib/worker_id.py) and a field of
    every log line, so an attempt's record leads to its CloudWatch lines."""

    @functools.wraps(handler)
    def run(event: Mapping[str, Any], context: LambdaContext | None) -> dict[str, Any]:
        request_id = getattr(context, "aws_request_id", None)
        request_id = str(request_id) if request_id else None
        worker_id.set_lambda_request(request_id)
        logs.set_request_id(request_id)
        try:
            return handler(event, context)
        finally:
            worker_id.set_lambda_request(None)
            logs.set_request_id(None)

    return run


@_invocation
def handle_sqs(event: Mapping[str, Any], context: LambdaContext | None) -> dict[str, Any]:
    """Run the jobs named by an SQS batch; report the messages SQS should redeliver.

    A message that names no job is reported as failed, so after the queue's
    maxReceiveCount it lands in the SQS dead-letter queue for a human to read.
    """
    rt = runtime_module.current()
    by_job: dict[str, list[str]] = {}
    receipts: dict[str, str] = {}  # message id -> receipt handle
    failures: list[str] = []
    for record in _records(event):
        message_id = str(record.get("messageId", ""))
        receipt = record.get("receiptHandle")
        if isinstance(receipt, str) and receipt:
            receipts[message_id] = receipt
        job_id = message_job_id(str(record.get("body", "")))
        if job_id is None:
            log.warning("SQS message %s names no job: %.200r", message_id, record.get("body"))
            failures.append(message_id)
            continue
        by_job.setdefault(job_id, []).append(message_id)
    if by_job:
        try:
            with _run_lock:
                outcomes = _process_in_waves(rt, by_job, receipts, deadline_from(context))
        except Exception:
            log.exception("processing an SQS batch failed; all of it will be redelivered")
            outcomes = dict.fromkeys(by_job, "deferred")
        dispatch = _sqs_dispatch(rt)
        held = [job_id for job_id in by_job if outcomes.get(job_id) == "held"]
        unsent = (
            set(dispatch.send([(j, HELD_REDELIVERY_SECONDS) for j in held]))
            if (dispatch is not None and held)
            else set(held)
        )
        deferred: list[str] = []
        for job_id, message_ids in by_job.items():
            outcome = outcomes.get(job_id, "deferred")
            if outcome in REDELIVER or (outcome == "held" and job_id in unsent):
                failures.extend(message_ids)
                if outcome != "held":
                    deferred.extend(receipts[m] for m in message_ids if m in receipts)
        if dispatch is not None and deferred:
            # Hand deferred messages back now, not after the visibility timeout.
            dispatch.change_visibility(deferred, 0)
    push_metrics(rt)
    return {"batchItemFailures": [{"itemIdentifier": m} for m in failures]}


@_invocation
def handle_schedule(event: Mapping[str, Any], context: LambdaContext | None) -> dict[str, Any]:
    """Drain due jobs until the deadline nears; answer what this invocation did.

    Where SQS delivers jobs (the dynamodb store with a queue), the scheduled
    function releases instead of draining: it sends the ids of jobs due too far
    ahead for an SQS delay, and of jobs whose message was lost, so every job
    reaches the SQS worker and is run in one place.
    """
    rt = runtime_module.current()
    from chalicelib.webhooks.runner import beside_drain

    with _run_lock, beside_drain(rt, deadline_from(context)):  # webhooks on their own thread
        # Periodic ticks first, so a tick's job is due in this very invocation.
        fired = periodic.fire_due(rt.service, rt.registry, rt.store.clock, settings=rt.settings)
        release = getattr(rt.store, "release_due", None)
        if _sqs_dispatch(rt) is not None and callable(release):
            done: dict[str, int] = {"released": release()}
        else:
            worker = worker_for(rt)
            before = _snapshot(worker.stats)
            stats = worker.drain(deadline_from(context))
            done = {k: v - before[k] for k, v in _snapshot(stats).items()}
        done["periodic_enqueued"] = sum(1 for f in fired if f.outcome == "enqueued")
    push_metrics(rt)
    return done


# -- SQS plumbing (only with a store that delivers through SQS) ----------------------

DEFAULT_VISIBILITY_TIMEOUT = 30  # SQS's own default, if the queue's is not configured


def _sqs_dispatch(rt: Runtime) -> SqsDispatch | None:
    dispatch = getattr(rt.store, "dispatch", None)
    return dispatch if dispatch is not None and hasattr(dispatch, "change_visibility") else None


def _process_in_waves(
    rt: Runtime,
    by_job: Mapping[str, list[str]],
    receipts: Mapping[str, str],
    deadline: float | None,
) -> dict[str, str]:
    """Hand the worker no more jobs at once than its pool runs, checking the deadline
    before each wave, so a batch larger than the pool never starts a job that cannot
    finish before the Lambda deadline (worker.process defers each job whose own
    handler's timeout would not fit; the others in the wave run).
    Meanwhile the messages of jobs not yet finished are kept hidden from other consumers.
    """
    from contextlib import nullcontext

    from chalicelib.storage.sqs_dispatch import VisibilityHeartbeat

    worker = worker_for(rt)
    ids = list(by_job)
    size = max(1, worker.config.concurrency)
    outcomes: dict[str, str] = {}
    dispatch = _sqs_dispatch(rt)
    timeout = int(
        rt.settings.extra.get("SPOOL_SQS_VISIBILITY_TIMEOUT") or DEFAULT_VISIBILITY_TIMEOUT
    )

    def receipts_of(job_ids: list[str]) -> list[str]:
        return [receipts[m] for j in job_ids for m in by_job[j] if m in receipts]

    heartbeat = (
        VisibilityHeartbeat(dispatch, receipts_of(ids), timeout) if dispatch is not None else None
    )
    with heartbeat or nullcontext():
        for start in range(0, len(ids), size):
            wave = ids[start : start + size]
            outcomes.update(worker.process(wave, deadline))
            if heartbeat is not None:
                heartbeat.done(receipts_of(wave))
    return outcomes


def _snapshot(stats: WorkerStats) -> dict[str, int]:
    return {
        "claimed": stats.claimed,
        "succeeded": stats.succeeded,
        "retried": stats.retried,
        "dead": stats.dead,
        "timed_out": stats.timed_out,
    }


def push_metrics(rt: Runtime) -> bool:
    """Push worker timings to SPOOL_PUSHGATEWAY_URL when set; never raises."""
    url = rt.settings.pushgateway_url
    if not url:
        return False
    return rt.metrics().push(url)

"""The worker's two entry points, behind app.py's event handlers.

- `handle_sqs`: SQS delivers job ids; each message body is {"id": "..."} or the
  bare id (a held job's new message also says how many times it was held:
  {"id": "...", "holds": N}). The ids go to worker.process() in waves no larger than its pool;
  messages whose job could not be processed, or was deferred (too little time
  left for that job's own handler timeout) and could not be sent again, are
  reported in `batchItemFailures`, so SQS redelivers only those.
  With a store that delivers through SQS, a deferred job is sent again at once as a
  new message, with the count of holds its old one carried (its old one
  acknowledged, so deferrals never count toward the queue's maxReceiveCount) and
  the messages of jobs still running are kept hidden (a visibility heartbeat). A job
  a limit held back (chalicelib/limits.py) is sent again as a new message, delayed
  until a rate would admit it, or for a concurrency limit longer each time it is
  held (`held_delay`). Without SQS delivery, or
  when that send fails, the old message is reported failed instead (a deferred one
  handed back at once, a held one after the visibility timeout).
- `handle_schedule`: a scheduled invocation first enqueues due periodic ticks
  (chalicelib/periodic.py), then drains due jobs until the Lambda
  deadline nears; with a store that delivers through SQS it instead releases
  due jobs to the queue (DynamoStore.release_due), a chunk at a time while the
  invocation has time left for one.

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
import random
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

from chalicelib import logs, periodic, worker_id
from chalicelib import runtime as runtime_module
from chalicelib.errors import StoreUnavailable
from chalicelib.held_line import Place, join
from chalicelib.ids import looks_like_job_id
from chalicelib.limits import Hold
from chalicelib.runtime import Runtime
from chalicelib.storage.base import job_timings
from chalicelib.worker import Worker, WorkerStats

if TYPE_CHECKING:
    from chalicelib.storage.sqs_dispatch import SqsDispatch

log = logging.getLogger("spool.events")

# Outcomes from Worker.process() that mean "deliver this message again": "failed" is
# handle_sqs's own, for a job whose processing raised; "unwritten", a job that ran but
# whose outcome the store would not take before the deadline neared (it is `running`
# under a lease that lapses meanwhile, so the redelivery runs it again). Both come back
# after the visibility timeout. A deferred job (and a held one) goes back as a new
# message instead, and its message is redelivered only when that send fails.
REDELIVER = frozenset({"failed", "unwritten"})
# A job a limit held back goes back to the queue as a fresh message (so holds do not
# count toward the queue's maxReceiveCount and send a waiting job to the SQS
# dead-letter queue), delayed by `held_delay`: a rate's hold says when its window has
# room again; a concurrency hold cannot know when a running job ends, so it waits
# HELD_REDELIVERY_SECONDS the first time and twice as long each time it is held again,
# up to CONCURRENCY_HOLD_CAP. Nothing wakes a held job earlier (a finish sends no
# message, and release_due counts delayed messages as on their way), so that cap is
# also how long a job may wait after its limit has room: a minute, not SQS's 15.
HELD_REDELIVERY_SECONDS = 2.0
CONCURRENCY_HOLD_CAP = 60.0
MAX_HELD_DELAY = 900.0  # SQS's DelaySeconds ceiling (sqs_dispatch.MAX_DELAY_SECONDS)
HOLDS_FIELD = "holds"  # the message body's count of the holds before it
_SQS_SOURCE = "aws:sqs"  # a record's eventSource, when it has one


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
        # No start marks: each would be one more DynamoDB request per job on AWS; an
        # SQS message's job counts its attempt when claimed (docs/aws.md).
        stale, _cached = _cached, (rt, rt.worker(start_marks=False))
        fresh = _cached[1]
    if stale is not None:
        stale[1].stop(hurry=False)  # its store may be the fresh one's (with_settings)
        stale[1].close()
    return fresh


_queues_said: weakref.ref[Runtime] | None = None  # the runtime whose SPOOL_QUEUES was said


def say_queues_unheeded(rt: Runtime) -> None:
    """Warn, once per runtime, that SPOOL_QUEUES does not restrict the SQS worker.

    A polling worker (`spool worker`, `spool serve`'s emulator) claims only from the
    queues it names; the SQS worker is handed jobs by id, and one SQS queue carries
    the jobs of every Spool queue, so it runs each job a message names. Skipping one
    would only drop its message: the job would wait for the lost-message sweep
    (`lost_after`) to come back to the same function. With SPOOL_QUEUES=a on the
    poller, a job of queue `b` ran, and nothing said the setting was not in force."""
    global _queues_said
    queues = rt.settings.queues
    if not queues:
        return
    with _lock:
        if _queues_said is not None and _queues_said() is rt:
            return
        _queues_said = weakref.ref(rt)
    log.warning(
        "SPOOL_QUEUES=%s is not honoured by the SQS worker: every job SQS delivers runs, "
        "whatever its queue (one SQS queue carries them all); unset it for this function, "
        "or give the queues that must run apart a stage of their own (docs/aws.md)",
        ",".join(queues),
    )


def shutdown() -> None:
    """Stop the kept worker: a drain in progress claims nothing more and returns
    once what it holds has finished; the next invocation builds a new worker."""
    global _cached
    with _lock:
        cached, _cached = _cached, None
    if cached is not None:
        cached[1].stop()  # hurries the store's calls for the drain in progress
        with _run_lock:
            cached[1].close()
        cached[1].calm()  # the store may outlive it (a test, the next runtime)


def deadline_from(context: LambdaContext | None) -> float | None:
    """The invocation's deadline as a time.monotonic() value (None: no deadline)."""
    if context is None:
        return None
    return time.monotonic() + max(0.0, float(context.get_remaining_time_in_millis())) / 1000.0


def time_left_of(context: LambdaContext | None) -> Callable[[], float] | None:
    """Seconds left in the invocation, asked of the context at each call (None: no
    deadline), for work that checks as it goes: the scheduled release
    (DynamoStore.release_due) stops before Lambda would cut it off."""
    if context is None:
        return None
    return lambda: max(0.0, float(context.get_remaining_time_in_millis())) / 1000.0


def held_delay(
    hold: Hold | None,
    holds: int,
    jitter: Callable[[], float] = random.random,
    place: Place | None = None,
) -> float:
    """Seconds a held job's new message waits, never under 1 (0 made it a busy loop).

    Under a rate: until the window has room (Hold.wait), a tenth more at most so the
    jobs it held together do not all come back in the same second, never under
    HELD_REDELIVERY_SECONDS (under "10/s" the window has room again within a second,
    but most of a held backlog is held again, and 1 s made twice the receives), and
    then as long as the jobs ahead of it in its rate's line take to start (`place`,
    chalicelib/held_line.py), capped at SQS's 900 s (a longer wait is held once more
    when it comes back). Without that line every held job came back 2-3 s later
    whatever stood ahead of it: 1,000 jobs under "10/s" enqueued at once were received
    9.2 times each before they ran (up to about 330 receives a second), 2.3 with it
    (bench/held_backlog.py; docs/aws.md, "Held jobs"). The jitter is on the first part
    only: on the line's part it would send a job back before the ones ahead of it.
    A store that does not say when its window has room waits one place of the line.

    Otherwise (a concurrency limit, or a rate hold whose line the store would not
    give): HELD_REDELIVERY_SECONDS doubled for each hold before (`holds`, which the
    message carries), capped at CONCURRENCY_HOLD_CAP, with jitter down to half, so
    jobs held together spread out. Before, every hold waited 2 s: under "1/h" one job
    was refused 1,800 times an hour.
    """
    if hold is not None and hold.kind == "rate" and place is not None:
        window = place.spacing if hold.wait is None else hold.wait
        first = max(HELD_REDELIVERY_SECONDS, window) * (1.0 + 0.1 * jitter())
        return min(MAX_HELD_DELAY, first + place.wait)
    if hold is not None and hold.wait is not None:
        wait = max(HELD_REDELIVERY_SECONDS, hold.wait)
        return min(MAX_HELD_DELAY, wait * (1.0 + 0.1 * jitter()))
    full = min(CONCURRENCY_HOLD_CAP, HELD_REDELIVERY_SECONDS * 2.0 ** min(max(0, holds), 32))
    return max(1.0, full * (0.5 + 0.5 * jitter()))


class ParsedMessage(NamedTuple):
    """What one SQS message body says: the job it names (None, and `why`, when it
    names none) and how many times that job was held before (0 for a bare id)."""

    job_id: str | None
    why: str
    holds: int


def read_message(body: str) -> ParsedMessage:
    """A message body is {"id": "...", "holds": N} or the bare id, parsed once.

    The id must have a job id's form (chalicelib/ids.py), checked before any store
    call: a body is not passed to DynamoDB as a key (whose limit is 2048 bytes)
    unless it could be one. A hold count that is not a whole number from 0 counts 0.
    """
    text = body.strip()
    if not text:
        return ParsedMessage(None, "its body is empty", 0)
    holds = 0
    if text.startswith("{"):
        try:
            data = json.loads(text)
        except (ValueError, RecursionError):
            # RecursionError: nested past Python's limit. Uncaught, it would fail the
            # whole batch instead of this one message.
            return ParsedMessage(None, "its body is not JSON", 0)
        value = data.get("id") if isinstance(data, dict) else None
        if not isinstance(value, str) or not value:
            return ParsedMessage(None, 'its body has no string "id"', 0)
        count = data.get(HOLDS_FIELD)
        holds = count if type(count) is int and count >= 0 else 0
        text = value
    if not looks_like_job_id(text):
        return ParsedMessage(None, "it does not name a job id (j_ and 32 hex digits)", 0)
    return ParsedMessage(text, "", holds)


def message_holds(body: str) -> int:
    """How many times the job of a message was held before it (0 for a bare id, or a
    count that is not a whole number from 0)."""
    return read_message(body).holds


def message_job_id(body: str) -> str | None:
    """A message body is {"id": "..."} or the bare id; anything else is None."""
    return read_message(body).job_id


def _records(event: Mapping[str, Any]) -> Iterable[Mapping[str, Any]]:
    """The records of an SQS batch that can be answered for: objects with a messageId
    (a non-empty string, the only thing batchItemFailures may name: an empty or
    unknown one there makes Lambda deliver the whole batch again) and no eventSource
    other than SQS's. The rest come from a direct invocation, not from the queue, so
    there is no message to deliver again: each kind is a WARNING and is skipped."""
    records = event.get("Records") if isinstance(event, Mapping) else None
    if isinstance(records, list):
        kept = [
            r
            for r in records
            if isinstance(r, Mapping)
            and type(r.get("messageId")) is str
            and r["messageId"]
            and r.get("eventSource", _SQS_SOURCE) == _SQS_SOURCE
        ]
        if len(kept) < len(records):
            log.warning(
                "%d of %d SQS records are not objects with a messageId string, or name "
                "an eventSource other than %s: not SQS messages, so skipped and none is "
                "reported failed",
                len(records) - len(kept),
                len(records),
                _SQS_SOURCE,
            )
        return kept
    # Not an SQS event (a test invocation, a wrong trigger): say so rather than
    # answer "nothing failed" in silence.
    log.warning(
        "the SQS handler was invoked with an event that has no Records list (keys: %s); "
        "nothing was processed",
        ", ".join(sorted(map(str, event))) if isinstance(event, Mapping) else type(event).__name__,
    )
    return []


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

    A message that names no job (its body is not {"id": ID} or a bare ID of a job
    id's form) is logged with a warning and reported as failed before any store
    call, so after the queue's maxReceiveCount it lands in the SQS dead-letter
    queue for a human to read. A well-formed id of a job that does not exist (a
    purged job's late duplicate) is logged with a warning and acknowledged: the
    message is deleted, as it is for a job already finished or running elsewhere.
    An error while processing is the problem of the jobs it concerns: a wave that
    fails is tried again one job at a time, and only the messages of jobs that
    still fail are reported (so they come back after the visibility timeout).
    """
    rt = runtime_module.current()
    say_queues_unheeded(rt)
    by_job: dict[str, list[str]] = {}
    holds: dict[str, int] = {}  # job id -> the times its message says it was held
    receipts: dict[str, str] = {}  # message id -> receipt handle
    failures: list[str] = []
    for record in _records(event):
        message_id: str = record["messageId"]  # a non-empty string (_records)
        receipt = record.get("receiptHandle")
        if isinstance(receipt, str) and receipt:
            receipts[message_id] = receipt
        job_id, why, held_before = read_message(str(record.get("body", "")))
        if job_id is None:
            log.warning(
                "SQS message %s names no job (%s); reported failed, so it goes to the "
                "dead-letter queue after maxReceiveCount: %.200r",
                message_id,
                why,
                record.get("body"),
            )
            failures.append(message_id)
            continue
        by_job.setdefault(job_id, []).append(message_id)
        holds[job_id] = max(holds.get(job_id, 0), held_before)
    if by_job:
        resent: set[str] = set()  # held jobs whose new message went out as they were held
        held_by: dict[str, Hold] = {}  # the limit that held each held job
        deadline = deadline_from(context)
        try:
            with _run_lock:
                outcomes = _process_in_waves(
                    rt, by_job, receipts, deadline, Held(resent, held_by, holds)
                )
        except Exception:
            # "failed", not "deferred": back after the visibility timeout, as a crashed
            # function's batch, so a lasting fault does not spin every message round
            # the queue (to the dead-letter queue) as fast as Lambda can invoke.
            log.exception(
                "processing an SQS batch failed; all of it will be redelivered after "
                "the visibility timeout"
            )
            outcomes = dict.fromkeys(by_job, "failed")
        _log_dropped(rt, by_job, outcomes)
        dispatch = _sqs_dispatch(rt)
        held = [j for j in by_job if outcomes.get(j) == "held" and j not in resent]
        unsent = _send_held(rt, dispatch, held, Held(resent, held_by, holds))
        # A deferred job goes back as a new message, due now: handing its message back
        # counted one more receive, and a job deferred maxReceiveCount times went to the
        # SQS dead-letter queue (and raised its alarm) with nothing wrong with it.
        deferred_ids = [j for j in by_job if outcomes.get(j, "deferred") == "deferred"]
        unsent |= _resend(dispatch, deferred_ids, 0, holds)
        deferred: list[str] = []
        for job_id, message_ids in by_job.items():
            outcome = outcomes.get(job_id, "deferred")
            if outcome in REDELIVER or (outcome in ("held", "deferred") and job_id in unsent):
                failures.extend(message_ids)
                if outcome == "deferred":
                    deferred.extend(receipts[m] for m in message_ids if m in receipts)
        if dispatch is not None and deferred:
            # Its new message was not sent: hand the old one back now, not after the
            # visibility timeout.
            dispatch.change_visibility(deferred, 0)
    push_metrics(rt)
    # Each id once, in the batch's order: a hand-made event may repeat one.
    return {"batchItemFailures": [{"itemIdentifier": m} for m in dict.fromkeys(failures)]}


@_invocation
def handle_schedule(event: Mapping[str, Any], context: LambdaContext | None) -> dict[str, Any]:
    """Drain due jobs until the deadline nears; answer what this invocation did.

    Where SQS delivers jobs (the dynamodb store with a queue), the scheduled
    function releases instead of draining: it sends the ids of jobs due too far
    ahead for an SQS delay, and of jobs whose message was lost, so every job
    reaches the SQS worker and is run in one place.
    """
    if not _is_scheduled_event(event):
        # Nothing in the event is read: a drain invoked by hand (the console's test
        # event) does what the minute's rule would, and says it was not the rule's.
        log.warning(
            "the scheduled function was invoked with an event that is not a scheduled "
            "event (EventBridge's, source aws.events, detail-type Scheduled Event): %.200r; "
            "draining as the schedule would",
            event,
        )
    rt = runtime_module.current()
    from chalicelib.webhooks.runner import beside_drain

    with _run_lock, beside_drain(rt, deadline_from(context)):  # webhooks on their own thread
        # Periodic ticks first, so a tick's job is due in this very invocation.
        fired = periodic.fire_due(rt.service, rt.registry, rt.store.clock, settings=rt.settings)
        release = getattr(rt.store, "release_due", None)
        if _sqs_dispatch(rt) is not None and callable(release):
            done: dict[str, int] = {"released": release(time_left=time_left_of(context))}
        else:
            worker = worker_for(rt)
            before = _snapshot(worker.stats)
            stats = worker.drain(deadline_from(context))
            done = {k: v - before[k] for k, v in _snapshot(stats).items()}
        done["periodic_enqueued"] = sum(1 for f in fired if f.outcome == "enqueued")
    push_metrics(rt)
    return done


def _is_scheduled_event(event: Any) -> bool:
    """Whether `event` is the one an EventBridge schedule sends, with each part
    chalice's CloudWatchEvent reads of the type it has there."""
    return (
        isinstance(event, Mapping)
        and event.get("source") == "aws.events"
        and event.get("detail-type") == "Scheduled Event"
        and isinstance(event.get("detail"), Mapping)
        and isinstance(event.get("resources"), list)
        and isinstance(event.get("time"), str)
    )


# -- SQS plumbing (only with a store that delivers through SQS) ----------------------

DEFAULT_VISIBILITY_TIMEOUT = 30  # SQS's own default, if the queue's is not configured
VISIBILITY_SETTING = "SPOOL_SQS_VISIBILITY_TIMEOUT"
# The dispatches (one per store, so per process) whose disagreement was said.
_visibility_warned: weakref.WeakSet[SqsDispatch] = weakref.WeakSet()


def _sqs_dispatch(rt: Runtime) -> SqsDispatch | None:
    dispatch = getattr(rt.store, "dispatch", None)
    return dispatch if dispatch is not None and hasattr(dispatch, "change_visibility") else None


def _visibility_timeout(rt: Runtime, dispatch: SqsDispatch | None) -> int:
    """How long the heartbeat keeps a running job's message hidden: the shorter of
    SPOOL_SQS_VISIBILITY_TIMEOUT and the queue's own VisibilityTimeout (the queue's,
    when the setting is unset).

    The heartbeat extends every third of this; going by a setting longer than the
    queue's timeout, a message reappeared, and its job was delivered a second time,
    before the first extension. The queue's attribute is read once per process
    (SqsDispatch.visibility_timeout), and a disagreement is said once with it."""
    setting = int(rt.settings.checked(VISIBILITY_SETTING, DEFAULT_VISIBILITY_TIMEOUT))
    queue = dispatch.visibility_timeout() if dispatch is not None else None
    if dispatch is None or queue is None or queue == setting:
        return setting
    if not rt.settings.text(VISIBILITY_SETTING):
        return queue  # unset, its 30 is SQS's default, no claim about this queue
    if dispatch not in _visibility_warned:
        _visibility_warned.add(dispatch)
        log.warning(
            "%s=%d but the jobs queue's VisibilityTimeout is %d s: the setting is to be the "
            "queue's (docs/settings.md). %s Set %s=%d, or give the queue the setting's timeout",
            VISIBILITY_SETTING,
            setting,
            queue,
            _disagreement(setting, queue),
            VISIBILITY_SETTING,
            queue,
        )
    return min(setting, queue)


def _disagreement(setting: int, queue: int) -> str:
    """What a setting that is not the queue's timeout did, and what the worker does now."""
    if setting > queue:
        return (
            f"Going by the setting, a running job's message would reappear after {queue} s, "
            f"before its first extension ({setting // 3} s), and its job be delivered twice; "
            f"the worker extends it every {max(1, queue // 3)} s instead."
        )
    return (
        f"The worker keeps running jobs' messages hidden {setting} s at a time, and a "
        f"crashed invocation's come back after {setting} s, not {queue}."
    )


@dataclass
class Held:
    """What handle_sqs knows of a batch's held jobs while it runs: those whose new
    message went out (`resent`), the hold of each (`by`, from worker.process) and how
    many times each was held before this message (`before`, from the message)."""

    resent: set[str]
    by: dict[str, Hold]
    before: Mapping[str, int]


def _process_in_waves(
    rt: Runtime,
    by_job: Mapping[str, list[str]],
    receipts: Mapping[str, str],
    deadline: float | None,
    held: Held,
) -> dict[str, str]:
    """Hand the worker no more jobs at once than its pool runs, checking the deadline
    before each wave, so a batch larger than the pool never starts a job that cannot
    finish before the Lambda deadline (worker.process defers each job whose own
    handler's timeout would not fit; the others in the wave run).
    Meanwhile the messages of jobs not yet finished are kept hidden from other consumers.
    A job a limit held back is sent again (`held_delay` later) as soon as its wave's
    claim holds it, not once the wave's running jobs end; its id goes into
    `held.resent`, and its old message is acknowledged with the batch.
    """
    from contextlib import nullcontext

    from chalicelib.storage.sqs_dispatch import VisibilityHeartbeat

    worker = worker_for(rt)
    ids = list(by_job)
    size = max(1, worker.config.concurrency)
    outcomes: dict[str, str] = {}
    dispatch = _sqs_dispatch(rt)
    timeout = _visibility_timeout(rt, dispatch)

    def receipts_of(job_ids: list[str]) -> list[str]:
        return [receipts[m] for j in job_ids for m in by_job[j] if m in receipts]

    heartbeat = (
        VisibilityHeartbeat(dispatch, receipts_of(ids), timeout) if dispatch is not None else None
    )

    def send_held(known: Mapping[str, str]) -> None:
        ids = [j for j, outcome in known.items() if outcome == "held" and j not in held.resent]
        unsent = _send_held(rt, dispatch, ids, held)
        sent = [j for j in ids if j not in unsent]
        held.resent.update(sent)
        if heartbeat is not None and sent:
            heartbeat.done(receipts_of(sent))

    with heartbeat or nullcontext():
        for start in range(0, len(ids), size):
            wave = ids[start : start + size]
            try:
                outcomes.update(_process_isolated(worker, wave, deadline, send_held, held.by))
            finally:
                if heartbeat is not None:
                    heartbeat.done(receipts_of(wave))
    return outcomes


def _send_held(
    rt: Runtime, dispatch: SqsDispatch | None, job_ids: list[str], held: Held
) -> set[str]:
    """Send held jobs back to the queue as new messages, each `held_delay` from now and
    counting one hold more; the ids that could not be sent (see _resend). The jobs a
    rate held take their places at the back of its line first (held_line.join), a
    place per job, in the order they were held, each limit's in one go."""
    if dispatch is None or not job_ids:
        return set(job_ids)
    places = _places(rt, [(j, held.by.get(j)) for j in job_ids])
    items = []
    for job_id in job_ids:
        before = held.before.get(job_id, 0)
        delay = held_delay(held.by.get(job_id), before, place=places.get(job_id))
        items.append((job_id, delay, before + 1))
    return set(dispatch.send_held(items))


def _places(rt: Runtime, held: list[tuple[str, Hold | None]]) -> dict[str, Place]:
    """The place in its rate's line of each job a rate held (none for the others)."""
    policy = worker_for(rt).config.policy
    limits = policy.by_key() if policy is not None else {}
    by_key: dict[str, list[str]] = {}
    for job_id, hold in held:
        limit = limits.get(hold.key) if hold is not None and hold.kind == "rate" else None
        if limit is not None and limit.rate is not None:
            by_key.setdefault(limit.key, []).append(job_id)
    places: dict[str, Place] = {}
    for key, ids in by_key.items():
        first = join(rt.store, limits[key], len(ids))
        if first is not None:
            places.update((job_id, first.after(n)) for n, job_id in enumerate(ids))
    return places


def _resend(
    dispatch: SqsDispatch | None, job_ids: list[str], delay: float, holds: Mapping[str, int]
) -> set[str]:
    """Send jobs back to the queue as new messages `delay` seconds from now; the ids that
    could not be sent (all of them without a queue), whose old messages must then be
    redelivered instead.

    Each new message carries the holds its old one counted (`holds`): a deferral is not
    a hold, nor a reason to forget them. Sent as a bare id, a job a limit had held N
    times came back, once deferred, as never held: its next hold waited 2 s again
    instead of up to CONCURRENCY_HOLD_CAP (held_delay)."""
    if dispatch is None or not job_ids:
        return set(job_ids)
    return set(dispatch.send_held([(j, delay, holds.get(j, 0)) for j in job_ids]))


def _process_isolated(
    worker: Worker,
    wave: list[str],
    deadline: float | None,
    on_claimed: Callable[[Mapping[str, str]], None] | None = None,
    held_by: dict[str, Hold] | None = None,
) -> dict[str, str]:
    """worker.process(wave), with a failure kept to the jobs it concerns.

    When the wave raises, its jobs are tried again one at a time, and only those that
    still raise come out "failed": one poison job (a record DynamoDB refuses, an
    object S3 will not give) no longer sends its neighbours back to the queue, toward
    the dead-letter queue. A store outage is everyone's problem: no job is tried
    alone then. A job of the wave that was claimed before the failure is leased, so
    alone it is "skipped" (its lease expires and the reaper sends it again).
    """
    try:
        return worker.process(wave, deadline, on_claimed, held_by)
    except StoreUnavailable:
        log.exception("the store is unavailable; the wave's %d jobs will be redelivered", len(wave))
        return dict.fromkeys(wave, "failed")
    except Exception:
        if len(wave) == 1:
            log.exception("processing job %s failed; its message will be redelivered", wave[0])
            return {wave[0]: "failed"}
        log.exception("processing a wave of %d jobs failed; trying each alone", len(wave))
    outcomes: dict[str, str] = {}
    for job_id in wave:
        try:
            outcomes.update(worker.process([job_id], deadline, on_claimed, held_by))
        except Exception:
            log.exception("processing job %s failed; its message will be redelivered", job_id)
            outcomes[job_id] = "failed"
    return outcomes


def _log_dropped(rt: Runtime, by_job: Mapping[str, list[str]], outcomes: Mapping[str, str]) -> None:
    """Warn of each message acknowledged for a job that does not exist (see handle_sqs).

    Only skipped jobs are looked up (a redundant delivery: a job finished, running
    elsewhere, not due yet, or gone), by their timings (job_timings: never a payload
    or result, which DynamoDB may keep in S3); one that has none (gone, or a damaged
    record) is read once more to tell which. A failed read is not logged."""
    skipped = [job_id for job_id in by_job if outcomes.get(job_id) == "skipped"]
    if not skipped:
        return
    try:
        found = job_timings(rt.store, skipped)
    except Exception:
        return
    for job_id in skipped:
        if job_id in found:
            continue
        try:
            gone = rt.store.get(job_id) is None
        except Exception:
            continue
        if gone:
            message_ids = by_job[job_id]
            log.warning(
                "SQS message %s names job %s, which does not exist (purged, or never "
                "enqueued in this store); the message is dropped",
                ", ".join(message_ids),
                job_id,
            )


def _snapshot(stats: WorkerStats) -> dict[str, int]:
    return {
        "claimed": stats.claimed,
        "succeeded": stats.succeeded,
        "retried": stats.retried,
        "dead": stats.dead,
        "timed_out": stats.timed_out,
        "unwritten": stats.unwritten,  # outcomes let go as the deadline neared (an outage)
    }


# Lambda pushes as each invocation ends: the container may be frozen right after.
# A process that invokes the handlers itself, many times a second (`spool serve`'s
# emulator and SQS poller), pushes on SPOOL_PUSH_INTERVAL instead and turns this off:
# a push per invocation was twice a second while idle, and a slow gateway held every
# drain for its 5 s timeout.
_push_each_invocation = True


def push_each_invocation(enabled: bool) -> None:
    global _push_each_invocation
    _push_each_invocation = enabled


def push_metrics(rt: Runtime) -> bool:
    """Push worker timings to SPOOL_PUSHGATEWAY_URL when set; never raises."""
    url = rt.settings.pushgateway_url
    if not url or not _push_each_invocation:
        return False
    return rt.metrics().push(url)

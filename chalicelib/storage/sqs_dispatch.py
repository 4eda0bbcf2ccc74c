"""Delivery on AWS: job ids travel to the worker function as SQS messages.

The store keeps the truth; this class only carries ids, so the JobStore
contract holds with or without a queue. A message may be lost (a crash between
the table write and the send) or arrive twice; neither harms a job, since every
transition is a conditional write and the scheduled function re-sends ids of
due jobs whose message went missing (`DynamoStore.release_due`).
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

from botocore.exceptions import ClientError, HTTPClientError

from chalicelib import logs

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient
    from mypy_boto3_sqs.literals import QueueAttributeNameType
    from mypy_boto3_sqs.type_defs import (
        ChangeMessageVisibilityBatchRequestEntryTypeDef,
        SendMessageBatchRequestEntryTypeDef,
    )

log = logging.getLogger("spool.sqs")

MAX_DELAY_SECONDS = 900  # SQS DelaySeconds ceiling: longer waits go to release_due
BATCH = 10  # SendMessageBatch / ChangeMessageVisibilityBatch entry limit
# Tries of one SendMessageBatch that may go out again after a try whose request was
# sent and whose answer was lost (see _resend_once). Set in the call's botocore
# context, and carried to the error it ends with, is how many answers were lost.
BLIND_RESENDS = 1
LOST_ANSWERS = "spool_sqs_lost_answers"


# SQS's codes for a queue that is not there (deleted, a wrong URL): a queue that
# answers GetQueueAttributes again is back.
MISSING_QUEUE = frozenset({"AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist"})
# Seconds /health's probe of a failing queue waits for a connection and for an answer,
# one try: under /health's own deadline (api/routes.py HEALTH_DEADLINE, 3 s).
PROBE_SECONDS = 1.0


class SendFailure(NamedTuple):
    """The last send that failed, kept until one succeeds (shown on /health)."""

    at: float  # time.monotonic()
    why: str
    # Over once the queue answers: SQS gave no answer (the network) or said the queue
    # was missing. A refusal by SQS itself (the entries refused, access denied) is
    # over only when a send succeeds: the queue may answer while refusing sends.
    probe: bool


def failure_of(exc: BaseException) -> SendFailure:
    """What a send's exception says on /health, and whether a probe may clear it."""
    why = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, ClientError):
        code = exc.response.get("Error", {}).get("Code", "")
        return SendFailure(time.monotonic(), why, code in MISSING_QUEUE)
    return SendFailure(time.monotonic(), why, True)


class Unsent(NamedTuple):
    """The ids of a send that did not go as asked: `refused` ones are known not to be
    on the queue (SQS said so, or no request reached it); `uncertain` ones went out in
    a request whose answer was lost, so they may well be there."""

    refused: list[str]
    uncertain: list[str]

    def all(self) -> list[str]:
        return [*self.refused, *self.uncertain]


def delay_for(seconds: float) -> int:
    """Round up, so a message never arrives before its job is due."""
    return max(0, min(MAX_DELAY_SECONDS, math.ceil(seconds - 1e-6)))


def body_for(job_id: str, holds: int) -> str:
    """A message's body: the bare id, or with the count of holds a held job has had."""
    return json.dumps({"id": job_id, "holds": holds}) if holds > 0 else job_id


class QueueDepth(NamedTuple):
    """What GetQueueAttributes counts, approximately. A message is `visible` until a
    consumer receives it, then `in_flight` (received, not yet deleted) while its job
    is claimed and runs: the visibility heartbeat keeps a running job's message
    hidden for the whole run. A message sent with DelaySeconds is `delayed` until its
    delay passes (a job due within 15 minutes, or one a limit held back)."""

    visible: int
    in_flight: int
    delayed: int = 0

    def for_waiting(self, running: int) -> int:
        """Messages that may still be for waiting jobs: all visible and delayed ones,
        and the in flight ones beyond those the `running` jobs hold (a job claimed
        without a message, by a polling worker, holds none: never below zero)."""
        return self.visible + self.delayed + max(0, self.in_flight - running)


def _resend_once(
    request_dict: dict[str, Any], caught_exception: BaseException | None = None, **_: Any
) -> bool | None:
    """botocore's needs-retry hook for SendMessageBatch, run before its retry handler
    (a handler of the named operation goes first, and the first answer not None is
    taken): after BLIND_RESENDS tries whose requests went out and whose answers were
    lost (a read timeout, a connection closed under the request: HTTPClientError), no
    more tries. A standard queue has no deduplication, so each such try put the batch
    on the queue once more: botocore's five tries made five messages for each job (six
    with the store's own resend), each a receive and a Lambda invocation for the claim
    to drop. One resend is kept: a pooled connection the server had closed loses the
    first try's answer without SQS having read the request. Other failures (no
    connection made, a throttle or a 5xx answer) go to botocore's own retries."""
    if not isinstance(caught_exception, HTTPClientError):
        return None
    context = request_dict.setdefault("context", {})
    lost = int(context.get(LOST_ANSWERS, 0)) + 1
    context[LOST_ANSWERS] = lost
    return False if lost > BLIND_RESENDS else None


def _carry_lost(exception: BaseException, context: dict[str, Any], **_: Any) -> None:
    """botocore's after-call-error hook: the error a send ends with says whether one of
    its tries lost its answer (the last try may have failed otherwise)."""
    if context.get(LOST_ANSWERS):
        setattr(exception, LOST_ANSWERS, True)


def _carry_lost_to_answer(
    http_response: Any, parsed: dict[str, Any], context: dict[str, Any], **_: Any
) -> None:
    """botocore's after-call hook: an error answer (a ClientError to be) after a try
    that lost its answer says so in its response."""
    if http_response.status_code >= 300 and context.get(LOST_ANSWERS):
        parsed[LOST_ANSWERS] = True


def _lost_answer(exc: BaseException) -> bool:
    """Whether a failed send may have put its messages on the queue."""
    if isinstance(exc, HTTPClientError) or getattr(exc, LOST_ANSWERS, False):
        return True
    return isinstance(exc, ClientError) and bool(exc.response.get(LOST_ANSWERS))


def watch_sends(client: Any) -> None:
    """Register _resend_once and its carriers on an SQS client, once per client
    however many dispatches share it (a stand-in without botocore's events has none)."""
    events = getattr(getattr(client, "meta", None), "events", None)
    if events is None:
        return
    name = "sqs.SendMessageBatch"
    events.register(f"needs-retry.{name}", _resend_once, unique_id="spool-sqs-resend-once")
    events.register(f"after-call-error.{name}", _carry_lost, unique_id="spool-sqs-lost-error")
    events.register(f"after-call.{name}", _carry_lost_to_answer, unique_id="spool-sqs-lost")


class SqsDispatch:
    """Sends job ids to one queue, ten to a request."""

    def __init__(self, client: SQSClient, queue: str) -> None:
        self.client = client
        watch_sends(client)
        self._queue = queue
        self._url: str | None = queue if "://" in queue else None
        self._lock = threading.Lock()
        # The last send that failed, until one succeeds (or, for a failure a probe may
        # clear, until the queue answers: `still_failing`): jobs are stored either way,
        # but a queue that refuses every id (deleted, the wrong URL) must show
        # somewhere other than a warning per enqueue (/health).
        self.failing: SendFailure | None = None
        self._visibility: int | None = None
        self._visibility_read = False
        self._visibility_lock = threading.Lock()
        self._prober: Any = None

    @property
    def queue_url(self) -> str:
        """A queue given by name is resolved once, on first use."""
        if self._url is None:
            with self._lock:
                if self._url is None:
                    self._url = self.client.get_queue_url(QueueName=self._queue)["QueueUrl"]
        return self._url

    def send(self, items: Sequence[tuple[str, float]]) -> list[str]:
        """Send (job id, delay seconds) pairs; returns the ids that could not be sent.

        An unsent id is not an error for the caller: its job is stored, and the
        scheduled release re-sends it once it is overdue.
        """
        return self.send_held([(job_id, delay, 0) for job_id, delay in items])

    def send_held(self, items: Sequence[tuple[str, float, int]]) -> list[str]:
        """Send (job id, delay seconds, holds) triples, as `send`. A job a limit held
        back (holds > 0) goes as {"id": ID, "holds": N}, N the times it was held, so
        the worker waits longer each time it holds it again (events.held_delay).
        Returns the ids not known to be on the queue: refused, or sent in a request
        whose answer was lost (`send_sorted` tells the two apart)."""
        return self.send_sorted(items).all()

    def send_sorted(self, items: Sequence[tuple[str, float, int]]) -> Unsent:
        """`send_held`, the ids it could not send sorted into those known not sent and
        those that may have been (a lost answer): a caller that would send a job again
        soon leaves the second kind to the release's lost-message sweep, which counts
        the queue's messages first."""
        refused: list[str] = []
        uncertain: list[str] = []
        for start in range(0, len(items), BATCH):
            chunk = items[start : start + BATCH]
            entries: list[SendMessageBatchRequestEntryTypeDef] = [
                {
                    "Id": str(i),
                    "MessageBody": body_for(job_id, holds),
                    "DelaySeconds": delay_for(delay),
                }
                for i, (job_id, delay, holds) in enumerate(chunk)
            ]
            # By id: a held job's body is {"id": ..., "holds": N}, and callers ask
            # `job_id in unsent` (events.py), so a body named none of them.
            unsent = self._send_batch(entries)
            refused.extend(chunk[int(entry_id)][0] for entry_id in unsent.refused)
            uncertain.extend(chunk[int(entry_id)][0] for entry_id in unsent.uncertain)
        if not refused and not uncertain:
            self.failing = None
        return Unsent(refused, uncertain)

    def still_failing(self) -> SendFailure | None:
        """The last failed send, unless it is one a probe may clear (`SendFailure.probe`)
        and the queue answers a GetQueueAttributes now: then it is forgotten.

        /health showed a failure for a whole minute with SQS long back, unless an
        enqueue happened to send something. Asked only while a failure is kept."""
        failing = self.failing
        if failing is None or not failing.probe:
            return failing
        try:
            self._probe_client().get_queue_attributes(
                QueueUrl=self.queue_url, AttributeNames=["QueueArn"]
            )
        except Exception:  # still away: the failure stands
            return failing
        with self._lock:
            if self.failing is failing:  # not one that failed since
                self.failing = None
        return self.failing

    def _probe_client(self) -> Any:
        """The client `still_failing` asks with: the dispatch's own, made again to try
        once and wait PROBE_SECONDS (as local/sqs_poller.answering_promptly does for
        receives). With the store's client (five tries, 20 s each) a queue that took
        the request and never answered held /health's check for minutes, and /health
        said the job store gave no answer. A stand-in without botocore's `meta` is
        asked itself."""
        if self._prober is None:
            meta = getattr(self.client, "meta", None)
            if meta is None:
                return self.client
            import boto3
            from botocore.config import Config as BotoConfig

            once = BotoConfig(
                connect_timeout=PROBE_SECONDS,
                read_timeout=PROBE_SECONDS,
                retries={"mode": "standard", "max_attempts": 1},
            )
            self._prober = boto3.session.Session().client(
                "sqs",
                endpoint_url=meta.endpoint_url,
                region_name=meta.region_name,
                config=meta.config.merge(once),
            )
        return self._prober

    def depth(self) -> QueueDepth | None:
        """Messages on the queue now, visible, in flight and delayed; None when SQS
        cannot say."""
        names: list[QueueAttributeNameType] = [
            "ApproximateNumberOfMessages",
            "ApproximateNumberOfMessagesNotVisible",
            "ApproximateNumberOfMessagesDelayed",
        ]
        try:
            found = self.client.get_queue_attributes(QueueUrl=self.queue_url, AttributeNames=names)
            visible, in_flight, delayed = (int(found["Attributes"][name]) for name in names)
        except Exception as exc:  # the network, the service, a queue gone: not known
            log.warning("could not read the SQS queue's depth: %s", exc)
            return None
        return QueueDepth(visible, in_flight, delayed)

    def visibility_timeout(self) -> int | None:
        """The queue's own VisibilityTimeout in seconds, read once per process (the
        worker asks on every batch; a queue's attribute changes with a deployment, which
        starts new processes). None, said once, when SQS will not say (no
        sqs:GetQueueAttributes, the service down)."""
        with self._visibility_lock:  # not self._lock: queue_url may take that one
            if not self._visibility_read:
                self._visibility = self._read_visibility()
                self._visibility_read = True
            return self._visibility

    def _read_visibility(self) -> int | None:
        try:
            found = self.client.get_queue_attributes(
                QueueUrl=self.queue_url, AttributeNames=["VisibilityTimeout"]
            )
            return int(found["Attributes"]["VisibilityTimeout"])
        except Exception as exc:
            log.warning(
                "could not read the SQS queue's VisibilityTimeout (sqs:GetQueueAttributes; "
                "asked once per process): %s. The worker goes by "
                "SPOOL_SQS_VISIBILITY_TIMEOUT alone",
                exc,
            )
            return None

    def _send_batch(self, entries: list[SendMessageBatchRequestEntryTypeDef]) -> Unsent:
        """Send one batch; returns the entry Ids that were not sent, or may not have
        been (a lost answer: all of them uncertain)."""
        for _ in range(2):  # one retry for the entries SQS refused
            try:
                response = self.client.send_message_batch(QueueUrl=self.queue_url, Entries=entries)
            except Exception as exc:  # the network or the service: leave it to release_due
                lost = _lost_answer(exc)
                log.warning(
                    "SQS send failed for %d job ids%s: %s",
                    len(entries),
                    " (its answer was lost: they may be on the queue)" if lost else "",
                    exc,
                )
                self.failing = failure_of(exc)
                ids = [e["Id"] for e in entries]
                return Unsent([], ids) if lost else Unsent(ids, [])
            refused = {f["Id"] for f in response.get("Failed", [])}
            entries = [e for e in entries if e["Id"] in refused]
            if not entries:
                return Unsent([], [])
        log.warning("SQS refused %d job ids", len(entries))
        self.failing = SendFailure(time.monotonic(), f"SQS refused {len(entries)} messages", False)
        return Unsent([e["Id"] for e in entries], [])

    def change_visibility(self, receipts: Sequence[str], seconds: int) -> int:
        """Set the visibility timeout of received messages; returns how many were changed.

        Used to keep a long job's message hidden while it runs, and to hand a
        deferred message back at once (seconds=0) instead of after the timeout.
        """
        changed = 0
        for start in range(0, len(receipts), BATCH):
            chunk = receipts[start : start + BATCH]
            entries: list[ChangeMessageVisibilityBatchRequestEntryTypeDef] = [
                {"Id": str(i), "ReceiptHandle": r, "VisibilityTimeout": seconds}
                for i, r in enumerate(chunk)
            ]
            try:
                response = self.client.change_message_visibility_batch(
                    QueueUrl=self.queue_url, Entries=entries
                )
            except Exception as exc:
                log.warning("SQS visibility change failed: %s", exc)
                continue
            changed += len(response.get("Successful", []))
        return changed


class VisibilityHeartbeat:
    """Keeps received messages hidden while their jobs run.

    A message reappears once its visibility timeout passes, even while a job
    it named is still running. Every third of the timeout this extends the
    messages still in progress by a full timeout; messages whose jobs are done
    are dropped with `done()`. With the queue's timeout at twice the function's
    (infra/generate.py VISIBILITY_FACTOR), it rarely fires on AWS; it matters
    wherever the timeout is shorter than a job (a local queue, a changed setting).
    `timeout` is the shorter of the setting and the queue's own
    (events._visibility_timeout).
    """

    def __init__(self, dispatch: SqsDispatch, receipts: Sequence[str], timeout: int) -> None:
        self.dispatch = dispatch
        self.timeout = max(0, int(timeout))
        self.every = max(1.0, self.timeout / 3)
        self.extensions = 0
        self._receipts = list(dict.fromkeys(receipts))
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> VisibilityHeartbeat:
        if self._receipts and self.timeout > 0:
            self._thread = logs.inherited_thread(self._beat, name="sqs-heartbeat")
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def done(self, receipts: Sequence[str]) -> None:
        finished = set(receipts)
        with self._lock:
            self._receipts = [r for r in self._receipts if r not in finished]

    def _beat(self) -> None:
        while not self._stop.wait(self.every):
            with self._lock:
                receipts = list(self._receipts)
            if receipts:
                self.dispatch.change_visibility(receipts, self.timeout)
                self.extensions += 1

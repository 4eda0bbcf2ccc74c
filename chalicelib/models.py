"""The job and the shapes that cross the store and HTTP boundaries."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue

from chalicelib.job_state import DEFAULT_TENANT as DEFAULT_TENANT
from chalicelib.job_state import TERMINAL_STATES as TERMINAL_STATES
from chalicelib.job_state import Attempt as Attempt
from chalicelib.job_state import JobState as JobState
from chalicelib.redact import redact_text

DEFAULT_QUEUE = "default"
# The label every queue that /metrics does not name is summed into (api/metric_labels.py).
OTHER_QUEUE = "_other"


# Stored state text -> JobState: a dict lookup, cheaper than JobState(text) on claim paths.
STATE_BY_VALUE = {state.value: state for state in JobState}
WAITING_STATES = frozenset({JobState.QUEUED, JobState.RETRYING})
# The most of a failure's message a job keeps (last_error, its attempt, its log line).
# An exception can carry megabytes (a response body in its message): redacted, logged
# and stored whole it held the worker's threads for seconds, long enough to be charged
# as a timeout, and made a /status answer megabytes long. Every store keeps this much.
MAX_ERROR_CHARS = 32 * 1024


# The most of a failure's class name a job keeps (an attempt's error_type, the start of
# its last_error). A class made at run time can be named anything (an error factory
# naming it after a remote service's words): a 2 MB name was kept whole, in every
# /status answer, and on DynamoDB put the job's item past 400 KB, so its outcome could
# not be written at all (tests/test_chaos_s51e_error_type_name.py).
MAX_ERROR_TYPE_CHARS = 200


UNREADABLE_MESSAGE = "<the exception's message could not be read>"


def exception_text(exc: BaseException) -> str:
    """str(exc), or UNREADABLE_MESSAGE when its __str__ fails, with whatever it raises:
    SystemExit or KeyboardInterrupt from a handler's __str__ escaped `except Exception`
    and turned the handler's failure into Spool's (a "worker error", or a payload
    check's SystemExit ending the serving thread). Only a KeyboardInterrupt on the
    main thread, where Ctrl-C arrives, goes through."""
    try:
        return str(exc)
    except BaseException as failed:
        if isinstance(failed, KeyboardInterrupt) and (
            threading.current_thread() is threading.main_thread()
        ):
            raise
        return UNREADABLE_MESSAGE


def error_type_name(exc: BaseException) -> str:
    """The name of `exc`'s class, cut to MAX_ERROR_TYPE_CHARS (short_error_type)."""
    return short_error_type(type(exc).__name__)


def short_error_type(name: str) -> str:
    """`name`, or its first MAX_ERROR_TYPE_CHARS - 1 characters and an ellipsis."""
    if len(name) <= MAX_ERROR_TYPE_CHARS:
        return name
    return name[: MAX_ERROR_TYPE_CHARS - 1] + "\u2026"


def within_error_limit(text: str) -> str:
    """`text`, or its first MAX_ERROR_CHARS characters and how many more there were."""
    if len(text) <= MAX_ERROR_CHARS:
        return text
    return f"{text[:MAX_ERROR_CHARS]}[... {len(text) - MAX_ERROR_CHARS} characters trimmed]"


def error_text(message: str, prefix: str = "") -> str:
    """`prefix` + `message`, masked, at most MAX_ERROR_CHARS characters with its marker.

    Cut before masking (masking costs ~0.3 s a MiB) and again after: a mask can be
    longer than what it hides and the prefix adds its own, and a store that holds the
    limit by slicing (DynamoDB's record budget) would otherwise cut the marker off.
    """
    shown = prefix + redact_text(message[:MAX_ERROR_CHARS])
    left = len(message) - min(len(message), MAX_ERROR_CHARS)
    if not left and len(shown) <= MAX_ERROR_CHARS:
        return shown
    keep = MAX_ERROR_CHARS - _MARKER_ROOM
    left += max(0, len(shown) - keep)
    return f"{shown[:keep]}[... {left} characters trimmed]"


# Room for "[... N characters trimmed]" with N of up to 20 digits.
_MARKER_ROOM = 48
_MARKER_PREFIX = "[... "
_MARKER_SUFFIX = " characters trimmed]"


def error_within_bytes(text: str, limit: int = MAX_ERROR_CHARS) -> str:
    """`text` in at most `limit` bytes of UTF-8, with the marker saying how many
    characters are not kept (those cut here and any an earlier marker counted).

    For a store that budgets its record in bytes (DynamoDB's 400 KB item): a message
    of MAX_ERROR_CHARS characters is up to four times as many bytes. `text` must
    encode as UTF-8 (no lone surrogates: storage.base.utf8_text)."""
    if (text.isascii() and len(text) <= limit) or len(text.encode()) <= limit:
        return text
    left = 0
    if text.endswith(_MARKER_SUFFIX) and _MARKER_PREFIX in text:
        body, _, count = text[: -len(_MARKER_SUFFIX)].rpartition(_MARKER_PREFIX)
        if count.isascii() and count.isdigit():
            text, left = body, int(count)
    kept = text.encode()[: max(0, limit - _MARKER_ROOM)].decode(errors="ignore")
    return f"{kept}{_MARKER_PREFIX}{left + len(text) - len(kept)}{_MARKER_SUFFIX}"


class Job(BaseModel):
    """One unit of background work and everything known about its progress.

    Priority: higher numbers run first; among equal priorities the earlier
    run_at goes first.
    """

    model_config = ConfigDict(frozen=True)

    id: str
    tenant: str = DEFAULT_TENANT
    type: str
    queue: str = DEFAULT_QUEUE
    priority: int = 0
    payload: dict[str, JsonValue] = Field(default_factory=dict)
    state: JobState = JobState.QUEUED
    attempts: int = 0
    max_attempts: int = 5
    run_at: datetime
    lease_token: str | None = None
    lease_expires_at: datetime | None = None
    result: JsonValue = None
    last_error: str | None = None
    idempotency_key: str | None = None
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL_STATES


_object_setattr = object.__setattr__


@dataclass(frozen=True, init=False)
class NewJob:
    """A job as it is handed to a store: validated, defaults applied, id chosen."""

    id: str
    type: str
    payload: dict[str, Any]
    run_at: datetime
    tenant: str = DEFAULT_TENANT
    queue: str = DEFAULT_QUEUE
    priority: int = 0
    max_attempts: int = 5
    idempotency_key: str | None = None
    # Where to POST the signed completion webhook (the job's own URL, or its
    # tenant's default endpoint, chosen at enqueue); None: no webhook.
    callback_url: str | None = None

    def __init__(
        self,
        id: str,
        type: str,
        payload: dict[str, Any],
        run_at: datetime,
        tenant: str = DEFAULT_TENANT,
        queue: str = DEFAULT_QUEUE,
        priority: int = 0,
        max_attempts: int = 5,
        idempotency_key: str | None = None,
        callback_url: str | None = None,
    ) -> None:
        """The dataclass's own __init__ (same parameters, order and defaults:
        tests/test_newjob_init.py), setting the instance's dict in one call where the
        generated frozen one calls object.__setattr__ once per field (one enqueue
        builds one: about a percent of its route)."""
        _object_setattr(
            self,
            "__dict__",
            {
                "id": id,
                "type": type,
                "payload": payload,
                "run_at": run_at,
                "tenant": tenant,
                "queue": queue,
                "priority": priority,
                "max_attempts": max_attempts,
                "idempotency_key": idempotency_key,
                "callback_url": callback_url,
            },
        )


_JOB_FIELDS = frozenset(Job.model_fields)


def trusted_job(values: dict[str, Any]) -> Job:
    """Build a Job from values a store wrote itself, skipping validation.

    Stores build one per job on the claim and add hot paths, where pydantic's
    model_construct costs several times more. `values` must hold every field.
    """
    job = Job.__new__(Job)
    _object_setattr(job, "__dict__", values)
    _object_setattr(job, "__pydantic_fields_set__", set(_JOB_FIELDS))
    _object_setattr(job, "__pydantic_extra__", None)
    _object_setattr(job, "__pydantic_private__", None)
    return job


def queued_job(new: NewJob, run_at: datetime, created: datetime) -> Job:
    """The job a store just added, with times at the precision the store keeps them."""
    return trusted_job(
        {
            "id": new.id,
            "tenant": new.tenant,
            "type": new.type,
            "queue": new.queue,
            "priority": new.priority,
            "payload": new.payload,
            "state": JobState.QUEUED,
            "attempts": 0,
            "max_attempts": new.max_attempts,
            "run_at": run_at,
            "lease_token": None,
            "lease_expires_at": None,
            "result": None,
            "last_error": None,
            "idempotency_key": new.idempotency_key,
            "created_at": created,
            "updated_at": created,
            "started_at": None,
            "finished_at": None,
        }
    )


@dataclass(frozen=True)
class AddResult:
    job: Job
    created: bool
    # When created is False: the callback URL stored with `job` (None when it has
    # none), which `Job`, the public status shape, does not carry. Idempotency
    # compares it with the new request's. None when created is True.
    callback_url: str | None = None

    def repeated(self, first: NewJob) -> AddResult:
        """What a later job of the same batch under the same key gets: this (the first
        job's) result, not created, with the URL stored with the job (`first`'s own
        when this add just created it)."""
        url = first.callback_url if self.created else self.callback_url
        return AddResult(self.job, False, url)


Outcome = Literal[JobState.SUCCEEDED, JobState.RETRYING, JobState.DEAD]

# How one attempt ended, as its history records it: a completion's state, or
# "lease_expired" when the worker vanished and a later claim reaped the job.
ATTEMPT_OUTCOMES = ("succeeded", "retrying", "dead", "lease_expired")


@dataclass(frozen=True)
class JobTiming:
    """What a worker needs to know of a job to judge whether it can run it in the time
    left (worker._defer_what_cannot_finish): its type and when a claim could take it.

    Never the payload or result, so a store that keeps those apart (DynamoDB's S3
    objects) answers without reading them (JobStore rules: `timings`)."""

    id: str
    type: str
    state: JobState
    run_at: datetime
    lease_expires_at: datetime | None


@dataclass(frozen=True)
class WorkerBeat:
    """A worker's last sign of life (JobStore.beat / live_workers)."""

    worker: str  # "host:pid:tag" / "lambda:<...>"
    queues: tuple[str, ...] | None  # None: every queue
    started_at: datetime
    last_beat: datetime


@dataclass(frozen=True)
class Completion:
    """How one claimed attempt ended; the store applies it only under the same lease."""

    job_id: str
    lease_token: str
    state: JobState
    result: Any = None
    error: str | None = None
    retry_at: datetime | None = None
    # The attempt's record, appended to the job's history in the same write as
    # the transition (None: record nothing, as before attempt history existed).
    attempt: Attempt | None = None

    def __post_init__(self) -> None:
        if self.state not in (JobState.SUCCEEDED, JobState.RETRYING, JobState.DEAD):
            raise ValueError(f"a completion cannot move a job to {self.state}")
        if self.state is JobState.RETRYING and self.retry_at is None:
            raise ValueError("a retry needs retry_at")


@dataclass(frozen=True)
class JobQuery:
    tenant: str | None = None
    state: JobState | None = None
    queue: str | None = None
    type: str | None = None
    limit: int = 100
    cursor: str | None = None
    # Newest first (created_at, id descending); the cursor then continues downward.
    newest_first: bool = False
    # False: the caller reads no payload or result (the dashboard's lists, which show
    # neither, and its bulk actions, which want ids). A store may then leave them out,
    # as {} and None, so a list of large jobs is not read whole to show a line of
    # each; SQLite, Postgres and Redis do (200 jobs of 250 KB payloads and results
    # were 100 MB read per dashboard page). Others read them all the same.
    bodies: bool = True


@dataclass(frozen=True)
class JobPage:
    jobs: list[Job]
    next_cursor: str | None = None


@dataclass(frozen=True)
class MinuteTally:
    """Attempts of one queue that finished in one UTC minute (JobStore.throughput)."""

    queue: str
    minute: datetime  # the start of the minute, UTC
    succeeded: int
    failed: int  # to retrying or dead, including reaped leases


@dataclass(frozen=True)
class CounterKey:
    queue: str
    type: str
    event: str


# System-wide counters a store keeps next to the jobs, one per event.
COUNTER_EVENTS = ("enqueued", "succeeded", "failed", "retried", "dead", "cancelled")

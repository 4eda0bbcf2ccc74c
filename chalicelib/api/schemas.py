"""Pydantic models for what crosses the HTTP edge; openapi.py documents these.

Responses are built as plain dicts on the hot path (see views below) and the
tests check each one validates against its model here, so the document and the
wire cannot drift apart.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue, field_validator

from chalicelib.errors import BadRequest
from chalicelib.models import Attempt, Job, JobState
from chalicelib.number_text import too_small, underflows
from chalicelib.service import NAME_PATTERN, EnqueueRequest, parse_rfc3339
from chalicelib.storage.base import BAD_CURSOR, decode_cursor, from_micros
from chalicelib.timebounds import to_utc
from chalicelib.webhooks.outbox import KEPT_FINISHED, Delivery

MAX_WAIT_SECONDS = 20.0
MAX_PAGE = 1000

# Fields the server owns; a client that sends one is told so instead of being ignored.
SERVER_OWNED = frozenset(
    {
        "id",
        "tenant",
        "state",
        "attempts",
        "result",
        "last_error",
        "lease_token",
        "lease_expires_at",
        "created_at",
        "updated_at",
        "started_at",
        "finished_at",
        "status_url",
    }
)


class ErrorDetail(BaseModel):
    code: str = Field(description="Stable, machine-readable error code.")
    message: str
    details: JsonValue = None


class ErrorResponse(BaseModel):
    error: ErrorDetail


class JobView(BaseModel):
    """A job as its tenant sees it."""

    model_config = ConfigDict(extra="forbid")

    id: str
    type: str
    queue: str
    priority: int
    state: JobState
    attempts: int
    max_attempts: int
    payload: dict[str, JsonValue]
    result: JsonValue = None
    last_error: str | None = None
    idempotency_key: str | None = None
    run_at: datetime
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None


class AttemptView(BaseModel):
    """One recorded attempt: when, where (which worker), and how it ended."""

    model_config = ConfigDict(extra="forbid")

    number: int = Field(
        description="The job's attempt count when it ran (restarts at 1 after a redrive)."
    )
    started_at: datetime
    finished_at: datetime
    seconds: float = Field(
        description="How long it ran (for lease_expired: how long it held the lease)."
    )
    worker: str = Field(description='"host:pid:tag", "lambda:<request id>", or "unknown".')
    outcome: Literal["succeeded", "retrying", "dead", "lease_expired"]
    error_type: str | None = None
    error: str | None = None
    traceback: str | None = Field(default=None, description="Its end, trimmed to a few KiB.")
    next_delay: float | None = Field(
        default=None, description="Seconds from the end of this attempt to the next try."
    )
    log_tail: list[str] = Field(default_factory=list)


class JobWithAttempts(JobView):
    """A job with its recorded attempts, oldest first (GET /status/{id}?attempts=true)."""

    # Not "attempts": JobView.attempts is already the count of attempts so far.
    attempt_history: list[AttemptView] = Field(
        description="The last attempts (SPOOL_ATTEMPT_HISTORY, default 25), oldest first."
    )
    attempt_history_error: dict[str, str] | None = Field(
        default=None,
        description="Only when the stored history cannot be read (attempt_history is then []): "
        '{"error": "attempt_history_unreadable", "message": "..."} saying why.',
    )


class WebhookView(BaseModel):
    """One completion webhook of the job (docs/webhooks.md): its id is the
    webhook-id header, the same on every retry."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(description="The webhook-id header (msg_...).")
    event: Literal["job.succeeded", "job.dead", "job.cancelled"]
    url: str
    state: Literal["pending", "delivered", "failed"]
    attempts: int = Field(description="Delivery attempts made so far.")
    next_attempt_at: datetime | None = Field(
        default=None, description="When it is tried next (pending only)."
    )
    created_at: datetime
    finished_at: datetime | None = Field(default=None, description="When delivered or failed.")
    last_error: str | None = Field(default=None, description="Why the last attempt failed.")


class JobWithWebhooks(JobView):
    """A job with its completion webhooks, oldest first (GET /status/{id}?webhooks=true)."""

    webhooks: list[WebhookView] = Field(
        description="Oldest first. Each new webhook drops the job's delivered or failed "
        "ones beyond the newest SPOOL_WEBHOOK_HISTORY (default "
        f"{KEPT_FINISHED}); pending ones are never dropped."
    )
    attempt_history: list[AttemptView] | None = Field(
        default=None, description="With attempts=true as well: as in JobWithAttempts."
    )
    attempt_history_error: dict[str, str] | None = Field(
        default=None, description="As in JobWithAttempts."
    )


class EnqueueResult(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str
    state: JobState
    status_url: str = Field(description="Where to poll this job: GET it with the same key.")
    created: bool = Field(description="False when the idempotency key was already seen.")


class BatchEnqueueRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    jobs: list[EnqueueRequest] = Field(min_length=1)


class BatchEnqueueResult(BaseModel):
    model_config = ConfigDict(extra="forbid")

    jobs: list[EnqueueResult]


class JobList(BaseModel):
    model_config = ConfigDict(extra="forbid")

    jobs: list[JobView] = Field(
        description="At most `limit` jobs; fewer when they reach about 4 MiB of JSON "
        "(the page then ends early, and next_cursor goes on from its last job)."
    )
    next_cursor: str | None = Field(
        default=None, description="Pass as ?cursor= for the next page; null on the last page."
    )


def cursor_in_range(value: str | None) -> str | None:
    """cursor_in_order for an oldest-first list (GET /jobs, GET /dlq)."""
    return cursor_in_order(value, newest_first=False)


def newest_cursor_in_range(value: str | None) -> str | None:
    """cursor_in_order for a newest-first list (the dashboard's)."""
    return cursor_in_order(value, newest_first=True)


def cursor_in_order(value: str | None, newest_first: bool) -> str | None:
    """A cursor names the (created_at, id) of the last job seen, in one list's order.
    One whose time no datetime can hold was not made by Spool, and would overflow a
    store's integer column (a 500): 400, like any other malformed cursor, and like one
    made by a list in the other order (decode_cursor). Raised as BadRequest, which
    pydantic lets through rather than turning into a 422."""
    if value is None:
        return None
    created, _ = decode_cursor(value, newest_first)
    try:
        from_micros(created)
    except OverflowError:
        raise BadRequest(BAD_CURSOR, {"cursor": value}) from None
    return value


def plain_digits(value: Any) -> Any:
    """A count in a query string as people write one: `1_0`, ` 1`, `+5` and `1.0`
    were read as numbers (pydantic reads strings as Python's int() does), where the
    JSON bodies and the cursors are strict. Anything else goes on to the int check."""
    if isinstance(value, str) and not (value.isascii() and value.isdigit()):
        raise ValueError("a whole number in plain digits")
    return value


# A number of seconds in a query string as JSON writes a non-negative number (what the
# client sends: f"{wait:g}", so "0.5" and "1e-05"); float() also read "1_0" as 10,
# " 1", "+1", "1\xa0", ".5" and "5.", so a typo held a request ten times longer.
_PLAIN_NUMBER = re.compile(r"[0-9]+(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?", re.ASCII)


def plain_number(value: Any) -> Any:
    """A number of seconds in a query string as JSON writes one (ASCII digits, an
    optional fraction and exponent); anything else, and a number too small for a
    float (1e-400, read as 0), is refused before the float check."""
    if not isinstance(value, str):
        return value
    if _PLAIN_NUMBER.fullmatch(value) is None:
        raise ValueError("a number in plain digits, such as 5 or 0.5")
    if underflows(value, float(value)):
        raise ValueError(too_small(value))
    return value


class ListQuery(BaseModel):
    """Query parameters of GET /jobs (and of GET /dlq, which fixes state=dead)."""

    model_config = ConfigDict(extra="forbid")

    state: JobState | None = None
    queue: str | None = Field(default=None, pattern=NAME_PATTERN)
    type: str | None = Field(default=None, pattern=NAME_PATTERN)
    limit: int = Field(default=100, ge=1, le=MAX_PAGE)
    cursor: str | None = Field(default=None, min_length=1, max_length=200)

    _cursor = field_validator("cursor")(cursor_in_range)
    _limit = field_validator("limit", mode="before")(plain_digits)


class DlqQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    queue: str | None = Field(default=None, pattern=NAME_PATTERN)
    type: str | None = Field(default=None, pattern=NAME_PATTERN)
    limit: int = Field(default=100, ge=1, le=MAX_PAGE)
    cursor: str | None = Field(default=None, min_length=1, max_length=200)

    _cursor = field_validator("cursor")(cursor_in_range)
    _limit = field_validator("limit", mode="before")(plain_digits)


class StatusQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    wait: float = Field(
        default=0,
        ge=0,
        le=MAX_WAIT_SECONDS,
        allow_inf_nan=False,
        description="Hold the request up to this many seconds until the job is terminal.",
    )
    attempts: bool = Field(
        default=False,
        description="Also return the job's recorded attempts as attempt_history "
        "(one more read; never cached).",
    )
    webhooks: bool = Field(
        default=False,
        description="Also return the job's completion webhooks and their delivery state "
        "(one more read; never cached).",
    )

    _wait = field_validator("wait", mode="before")(plain_number)


class RedriveAllRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    queue: str | None = Field(default=None, pattern=NAME_PATTERN)
    type: str | None = Field(default=None, pattern=NAME_PATTERN)
    limit: int = Field(default=1000, ge=1, le=10_000)
    died_before: datetime | None = Field(
        default=None,
        description="Only jobs that died (finished_at) strictly before this RFC 3339 "
        "date-time, with a time zone. Without it, the server's clock at the start of "
        "the call. Pass back the died_before of the first answer to redrive in several "
        "calls exactly the jobs dead when the first began.",
    )

    @field_validator("died_before", mode="before")
    @classmethod
    def _rfc3339(cls, value: Any) -> Any:
        """Parsed as run_at is (chalicelib/service.py), but a bad value is a 400:
        raised as BadRequest, which pydantic lets through (see cursor_in_range)."""
        if value is None:
            return None
        if not isinstance(value, str):
            example = "an RFC 3339 date-time, such as 2030-01-01T00:00:00Z"
            raise BadRequest(
                f"died_before must be a string: {example}",
                {"field": "died_before", "type": value.__class__.__name__},
            )
        try:
            return to_utc(parse_rfc3339(value, "died_before"))
        except ValueError as exc:
            message = str(exc)
            if not message.startswith("died_before"):  # to_utc's: out of range
                message = f"died_before {message}"
            raise BadRequest(message, {"field": "died_before", "value": value[:64]}) from None


class RedriveAllResult(BaseModel):
    model_config = ConfigDict(extra="forbid")

    redriven: int
    ids: list[str]
    died_before: datetime = Field(
        description="The bound this call used: the request's, or the server's clock at "
        "its start. Send it back as died_before on the next call."
    )


class Health(BaseModel):
    status: Literal["ok"]
    store: Literal["ok"]
    warnings: list[str] | None = Field(
        default=None,
        description="Present only when the store's server is set to lose acknowledged "
        "jobs though every call works (Redis: an allkeys-* maxmemory-policy), each "
        "naming the fix.",
    )


def job_view(job: Job) -> dict[str, Any]:
    """JobView as a dict, built directly: this runs on every status request."""
    return {
        "id": job.id,
        "type": job.type,
        "queue": job.queue,
        "priority": job.priority,
        "state": job.state.value,
        "attempts": job.attempts,
        "max_attempts": job.max_attempts,
        "payload": job.payload,
        "result": job.result,
        "last_error": job.last_error,
        "idempotency_key": job.idempotency_key,
        "run_at": job.run_at,
        "created_at": job.created_at,
        "updated_at": job.updated_at,
        "started_at": job.started_at,
        "finished_at": job.finished_at,
    }


def webhook_view(delivery: Delivery) -> dict[str, Any]:
    """WebhookView as a dict."""
    return {
        "id": delivery.id,
        "event": delivery.event,
        "url": delivery.url,
        "state": delivery.state,
        "attempts": delivery.attempts,
        "next_attempt_at": delivery.next_at if delivery.state == "pending" else None,
        "created_at": delivery.created_at,
        "finished_at": delivery.finished_at,
        "last_error": delivery.last_error,
    }


def attempt_view(attempt: Attempt) -> dict[str, Any]:
    """AttemptView as a dict."""
    return {
        "number": attempt.number,
        "started_at": attempt.started_at,
        "finished_at": attempt.finished_at,
        "seconds": attempt.seconds,
        "worker": attempt.worker,
        "outcome": attempt.outcome,
        "error_type": attempt.error_type,
        "error": attempt.error,
        "traceback": attempt.traceback,
        "next_delay": attempt.next_delay,
        "log_tail": list(attempt.log_tail),
    }

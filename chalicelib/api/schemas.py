"""Pydantic models for what crosses the HTTP edge; openapi.py documents these.

Responses are built as plain dicts on the hot path (see views below) and the
tests check each one validates against its model here, so the document and the
wire cannot drift apart.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue

from chalicelib.models import Job, JobState
from chalicelib.service import NAME_PATTERN, EnqueueRequest

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

    jobs: list[JobView]
    next_cursor: str | None = Field(
        default=None, description="Pass as ?cursor= for the next page; null on the last page."
    )


class ListQuery(BaseModel):
    """Query parameters of GET /jobs (and of GET /dlq, which fixes state=dead)."""

    model_config = ConfigDict(extra="forbid")

    state: JobState | None = None
    queue: str | None = Field(default=None, pattern=NAME_PATTERN)
    type: str | None = Field(default=None, pattern=NAME_PATTERN)
    limit: int = Field(default=100, ge=1, le=MAX_PAGE)
    cursor: str | None = Field(default=None, min_length=1, max_length=200)


class DlqQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    queue: str | None = Field(default=None, pattern=NAME_PATTERN)
    type: str | None = Field(default=None, pattern=NAME_PATTERN)
    limit: int = Field(default=100, ge=1, le=MAX_PAGE)
    cursor: str | None = Field(default=None, min_length=1, max_length=200)


class StatusQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    wait: float = Field(
        default=0,
        ge=0,
        le=MAX_WAIT_SECONDS,
        description="Hold the request up to this many seconds until the job is terminal.",
    )


class RedriveAllRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    queue: str | None = Field(default=None, pattern=NAME_PATTERN)
    type: str | None = Field(default=None, pattern=NAME_PATTERN)
    limit: int = Field(default=1000, ge=1, le=10_000)


class RedriveAllResult(BaseModel):
    model_config = ConfigDict(extra="forbid")

    redriven: int
    ids: list[str]


class Health(BaseModel):
    status: Literal["ok"]
    store: Literal["ok"]


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

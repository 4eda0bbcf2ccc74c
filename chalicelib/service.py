"""What the routes and the command line call: enqueue, status, list, cancel, redrive.

Validation happens here, before the store is touched, so refused input writes nothing.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, JsonValue, field_validator

from chalicelib.errors import JobNotFound, ValidationFailed
from chalicelib.handlers import Registry
from chalicelib.ids import new_job_id
from chalicelib.models import AddResult, Job, JobPage, JobQuery, JobState, NewJob
from chalicelib.storage.base import JobStore

NAME_PATTERN = r"^[A-Za-z0-9_.:-]{1,64}$"
MAX_DELAY_SECONDS = 366 * 24 * 3600


class EnqueueRequest(BaseModel):
    """One job as a client may describe it. Server-owned fields (state, attempts,
    tenant, id, ...) are refused, not ignored, so a client never thinks it set them."""

    model_config = ConfigDict(extra="forbid")

    type: str = Field(min_length=1, max_length=64, pattern=NAME_PATTERN)
    payload: dict[str, JsonValue] = Field(default_factory=dict)
    queue: str | None = Field(default=None, pattern=NAME_PATTERN)
    priority: int | None = Field(default=None, ge=-1000, le=1000)
    delay: float | None = Field(default=None, ge=0, le=MAX_DELAY_SECONDS)
    run_at: datetime | None = None
    max_attempts: int | None = Field(default=None, ge=1, le=100)
    idempotency_key: str | None = Field(default=None, min_length=1, max_length=200)

    @field_validator("run_at")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("run_at needs a time zone (e.g. 2030-01-01T00:00:00Z)")
        return value


class Service:
    def __init__(self, store: JobStore, registry: Registry) -> None:
        self.store = store
        self.registry = registry

    def build(self, request: EnqueueRequest, tenant: str) -> NewJob:
        spec = self.registry.get(request.type)
        payload = spec.validate(request.payload, tenant)
        now = self.store.clock.now()
        if request.delay is not None and request.run_at is not None:
            raise ValidationFailed("give delay or run_at, not both")
        run_at = now
        if request.delay:
            run_at = now + timedelta(seconds=request.delay)
        elif request.run_at is not None:
            run_at = max(now, request.run_at.astimezone(UTC))
        return NewJob(
            id=new_job_id(),
            type=request.type,
            payload=payload,
            run_at=run_at,
            tenant=tenant,
            queue=request.queue or spec.queue,
            priority=spec.priority if request.priority is None else request.priority,
            max_attempts=request.max_attempts or spec.retry.max_attempts,
            idempotency_key=request.idempotency_key,
        )

    def enqueue(self, requests: Sequence[EnqueueRequest], tenant: str) -> list[AddResult]:
        """All or nothing: every job is validated before any is stored."""
        problems: list[dict[str, Any]] = []
        built: list[NewJob] = []
        for index, request in enumerate(requests):
            try:
                built.append(self.build(request, tenant))
            except ValidationFailed as exc:
                if len(requests) == 1:
                    raise  # keep the precise error (e.g. UnknownJobType) for a single job
                problems.append({"index": index, "message": exc.message, "details": exc.details})
        if problems:
            raise ValidationFailed("some jobs in the batch are invalid; none were stored", problems)
        return self.store.add(built)

    def status(self, job_id: str, tenant: str | None) -> Job:
        job = self.store.get(job_id, tenant)
        if job is None:
            raise JobNotFound("job not found", {"id": job_id})
        return job

    def cancel(self, job_id: str, tenant: str | None) -> Job:
        return self.store.cancel(job_id, tenant)

    def list_jobs(self, query: JobQuery) -> JobPage:
        return self.store.list_jobs(query)

    def redrive(self, job_id: str, tenant: str | None) -> Job:
        job = self.status(job_id, tenant)
        if job.state is not JobState.DEAD:
            from chalicelib.errors import InvalidTransition

            raise InvalidTransition(
                f"only dead jobs can be redriven; this one is {job.state.value}",
                {"state": job.state.value},
            )
        moved = self.store.redrive([job_id], tenant)
        if not moved:  # raced with another redrive
            return self.status(job_id, tenant)
        return moved[0]

    def redrive_all(
        self,
        tenant: str | None,
        queue: str | None = None,
        type_: str | None = None,
        limit: int = 1000,
    ) -> list[Job]:
        """Redrive dead jobs matching the filter, a page at a time, up to `limit`."""
        moved: list[Job] = []
        cursor: str | None = None
        while len(moved) < limit:
            page = self.store.list_jobs(
                JobQuery(
                    tenant=tenant,
                    state=JobState.DEAD,
                    queue=queue,
                    type=type_,
                    limit=min(500, limit - len(moved)),
                    cursor=cursor,
                )
            )
            if not page.jobs:
                break
            moved.extend(self.store.redrive([j.id for j in page.jobs], tenant))
            if page.next_cursor is None:
                break
            cursor = page.next_cursor
        return moved


def job_name_ok(value: str) -> bool:
    return re.fullmatch(NAME_PATTERN, value) is not None

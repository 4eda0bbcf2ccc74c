"""Small builders shared by tests."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, Protocol

from chalicelib.clock import Clock
from chalicelib.ids import new_job_id
from chalicelib.models import Attempt, Job, NewJob
from chalicelib.storage.base import JobStore


def new_job(
    clock: Clock,
    type_: str = "echo",
    *,
    payload: dict[str, Any] | None = None,
    delay: float = 0.0,
    run_at: datetime | None = None,
    **fields: Any,
) -> NewJob:
    return NewJob(
        id=new_job_id(),
        type=type_,
        payload=payload if payload is not None else {"n": 1},
        run_at=run_at or clock.now() + timedelta(seconds=delay),
        **fields,
    )


def stored(store: JobStore, job_id: str, tenant: str | None = None) -> Job:
    """`store.get` for a job the test knows is there: a missing job fails here, by name,
    instead of as an AttributeError on None a line later (and mypy sees a `Job`)."""
    job = store.get(job_id, tenant=tenant)
    assert job is not None, f"{job_id} is not in the store"
    return job


class Leased(Protocol):
    """A claimed job or webhook delivery: what `token` reads."""

    @property
    def id(self) -> str: ...

    @property
    def lease_token(self) -> str | None: ...


def token(leased: Leased) -> str:
    """The lease token of a claimed job or delivery (a finish needs one): one that holds
    no lease fails here, by name. `lease_token or ""` sent an empty token instead, which
    the store refuses, and a test that did not look at the answer went on as if done."""
    assert leased.lease_token is not None, f"{leased.id} holds no lease"
    return leased.lease_token


def history(store: JobStore, job_id: str, tenant: str | None = None) -> list[Attempt]:
    """`store.attempts` for a job the test knows is there (None means unknown job)."""
    attempts = store.attempts(job_id, tenant)
    assert attempts is not None, f"{job_id} is not in the store"
    return attempts

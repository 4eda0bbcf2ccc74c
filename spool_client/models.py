"""What the API answers, as small frozen dataclasses (no pydantic needed here).

Each keeps the JSON it came from in `.raw`, so a field the server adds later is
never lost to a client that predates it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

TERMINAL = frozenset({"succeeded", "dead", "cancelled"})


def _when(value: Any) -> datetime | None:
    return None if value is None else datetime.fromisoformat(str(value))


@dataclass(frozen=True)
class Job:
    """A job as its tenant sees it (GET /status/{id})."""

    id: str
    type: str
    queue: str
    priority: int
    state: str
    attempts: int
    max_attempts: int
    payload: dict[str, Any]
    result: Any
    last_error: str | None
    idempotency_key: str | None
    run_at: datetime | None
    created_at: datetime | None
    updated_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    attempt_history: list[dict[str, Any]] | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def terminal(self) -> bool:
        """Finished for good: succeeded, dead or cancelled (a dead job may be redriven)."""
        return self.state in TERMINAL

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Job:
        return cls(
            id=data["id"],
            type=data["type"],
            queue=data["queue"],
            priority=data["priority"],
            state=data["state"],
            attempts=data["attempts"],
            max_attempts=data["max_attempts"],
            payload=data.get("payload") or {},
            result=data.get("result"),
            last_error=data.get("last_error"),
            idempotency_key=data.get("idempotency_key"),
            run_at=_when(data.get("run_at")),
            created_at=_when(data.get("created_at")),
            updated_at=_when(data.get("updated_at")),
            started_at=_when(data.get("started_at")),
            finished_at=_when(data.get("finished_at")),
            attempt_history=data.get("attempt_history"),
            raw=data,
        )


@dataclass(frozen=True)
class Enqueued:
    """POST /enqueue's answer for one job. `created` is False when the idempotency
    key was already seen (this is the job that key made before)."""

    id: str
    state: str
    status_url: str
    created: bool
    idempotency_key: str

    @classmethod
    def from_json(cls, data: dict[str, Any], key: str) -> Enqueued:
        return cls(data["id"], data["state"], data["status_url"], bool(data["created"]), key)


@dataclass(frozen=True)
class Page:
    """One page of GET /jobs or GET /dlq; `next_cursor` is None on the last page."""

    jobs: list[Job]
    next_cursor: str | None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Page:
        return cls([Job.from_json(j) for j in data["jobs"]], data.get("next_cursor"))


@dataclass(frozen=True)
class Redriven:
    """POST /dlq/redrive's answer: how many dead jobs went back to queued, and which."""

    redriven: int
    ids: list[str]

"""What the API answers, as small frozen dataclasses (no pydantic needed here).

Each keeps the JSON it came from in `.raw`, so a field the server adds later is
never lost to a client that predates it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from functools import wraps
from typing import Any, TypeVar

from spool_client.errors import UnexpectedResponse, WrongType

TERMINAL = frozenset({"succeeded", "dead", "cancelled"})
_Model = TypeVar("_Model")
# What reading JSON of another shape raises: a missing field, a wrong type, a bad date.
_SHAPE_ERRORS = (KeyError, TypeError, ValueError, AttributeError, IndexError)


def _when(value: Any) -> datetime | None:
    return None if value is None else datetime.fromisoformat(str(value))


def _text(data: dict[str, Any], name: str) -> str:
    value = data[name]
    if not isinstance(value, str):
        raise WrongType(f"{name} is not a string")
    return value


def _maybe_text(data: dict[str, Any], name: str) -> str | None:
    value = data.get(name)
    if value is not None and not isinstance(value, str):
        raise WrongType(f"{name} is not a string or null")
    return value


def _whole(data: dict[str, Any], name: str) -> int:
    """An integer field: a bool (JSON true) or 2.5 is not a count, and None read as one
    failed later, in the caller's arithmetic."""
    value = data[name]
    if isinstance(value, bool) or not isinstance(value, int):
        raise WrongType(f"{name} is not a whole number")
    return value


def _maybe_list(data: dict[str, Any], name: str) -> list[Any] | None:
    value = data.get(name)
    if value is not None and not isinstance(value, list):
        raise WrongType(f"{name} is not a list or null")
    return value


def _flag(data: dict[str, Any], name: str) -> bool:
    """A boolean field: bool("false") is True, so a string is refused, not read."""
    value = data[name]
    if not isinstance(value, bool):
        raise WrongType(f"{name} is not true or false")
    return value


# Spool's cursors are a few dozen characters (the API takes at most 200 back).
MAX_CURSOR_CHARS = 1024


def _cursor(value: Any) -> str | None:
    """next_cursor as the next page's ?cursor=, checked before it is sent back: a
    broken server's object or list went out as a query value, and one of 100,000
    characters made the next request a ValueError blaming the caller's arguments."""
    if value is None:
        return None
    if not isinstance(value, str) or not 0 < len(value) <= MAX_CURSOR_CHARS:
        shown = f"{len(value)} characters" if isinstance(value, str) else type(value).__name__
        what = f"answered a page whose next_cursor is not a cursor ({shown})"
        raise UnexpectedResponse(None, "application/json", "the server", what)
    return value


def _answer(kind: str) -> Callable[[Callable[..., _Model]], Callable[..., _Model]]:
    """from_json that turns JSON of another shape (a wrong --url answering its own
    JSON) into UnexpectedResponse, instead of a KeyError deep in the caller."""

    def decorate(build: Callable[..., _Model]) -> Callable[..., _Model]:
        @wraps(build)
        def parse(*args: Any) -> _Model:
            try:
                return build(*args)
            except _SHAPE_ERRORS as exc:
                raise UnexpectedResponse.shape(kind, exc) from exc

        return parse

    return decorate


def _payload(data: dict[str, Any]) -> dict[str, Any]:
    """The job's payload: an object (null or absent reads as {})."""
    value = data.get("payload")
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise WrongType("payload is not an object")
    return value


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
    # GET /status/{id}?webhooks=true (get(id, webhooks=True)): each completion webhook's
    # delivery (id, event, url, state, attempts, next_attempt_at, last_error...).
    webhooks: list[dict[str, Any]] | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def terminal(self) -> bool:
        """Finished for good: succeeded, dead or cancelled (a dead job may be redriven)."""
        return self.state in TERMINAL

    @classmethod
    @_answer("a job")
    def from_json(cls, data: dict[str, Any]) -> Job:
        return cls(
            id=_text(data, "id"),
            type=_text(data, "type"),
            queue=_text(data, "queue"),
            priority=_whole(data, "priority"),
            state=_text(data, "state"),
            attempts=_whole(data, "attempts"),
            max_attempts=_whole(data, "max_attempts"),
            payload=_payload(data),
            result=data.get("result"),
            last_error=_maybe_text(data, "last_error"),
            idempotency_key=_maybe_text(data, "idempotency_key"),
            run_at=_when(data.get("run_at")),
            created_at=_when(data.get("created_at")),
            updated_at=_when(data.get("updated_at")),
            started_at=_when(data.get("started_at")),
            finished_at=_when(data.get("finished_at")),
            attempt_history=_maybe_list(data, "attempt_history"),
            webhooks=_maybe_list(data, "webhooks"),
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
    @_answer("an enqueued job")
    def from_json(cls, data: dict[str, Any], key: str) -> Enqueued:
        return cls(
            _text(data, "id"),
            _text(data, "state"),
            _text(data, "status_url"),
            _flag(data, "created"),
            key,
        )


@dataclass(frozen=True)
class Page:
    """One page of GET /jobs or GET /dlq; `next_cursor` is None on the last page."""

    jobs: list[Job]
    next_cursor: str | None

    @classmethod
    @_answer("a page of jobs")
    def from_json(cls, data: dict[str, Any]) -> Page:
        jobs = data["jobs"]
        if not isinstance(jobs, list):
            raise WrongType("jobs is not a list")
        return cls([Job.from_json(j) for j in jobs], _cursor(data.get("next_cursor")))


@dataclass(frozen=True)
class Redriven:
    """POST /dlq/redrive's answer: how many dead jobs went back to queued, and which.

    `died_before` is the bound the server used (the one sent, or its clock at the
    start of the call): pass it to the next `redrive_all` to redrive, over several
    calls, only the jobs that were dead when the first began. None from a server
    that predates it."""

    redriven: int
    ids: list[str]
    died_before: datetime | None = None

    @classmethod
    @_answer("a redrive answer")
    def from_json(cls, data: dict[str, Any]) -> Redriven:
        redriven, ids = data["redriven"], data["ids"]
        if isinstance(redriven, bool) or not isinstance(redriven, int) or not isinstance(ids, list):
            raise WrongType("redriven is not a count or ids not a list")
        if not all(isinstance(one, str) for one in ids):
            raise WrongType("ids holds something that is not a job id (a string)")
        return cls(redriven, list(ids), _when(data.get("died_before")))

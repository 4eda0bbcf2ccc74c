"""Does a request with a seen idempotency key ask for the job that key already names?

The same request sent again (a client retrying after a timeout) must get the
first job back; a different request under the same key is a client bug that
must not be silently answered with a job it did not ask for. What is compared
is what the client asked for, as the service resolved it (handler defaults
applied, payload normalized by the handler's model):

- type, payload, queue, priority and max_attempts, exactly (numbers by value,
  so 1 and 1.0 are the same and true is not 1);
- callback_url, exactly, as resolved (the tenant's default endpoint when the
  request names none, or none at all): the stored job's URL comes from the
  store's AddResult, since Job, the public status shape, does not carry it;
- the schedule, while the job has not started yet (afterwards its run_at is the
  next retry's, no longer the requested one):
  - an explicit run_at must name the same instant as the stored run_at; a
    run_at that was already past when the job was created means "at once";
  - a delay (none at all means 0) is an offset from when the job was created,
    so the same delay sent again later is the same request, although it would
    compute a later instant; a different delay is a different request.
  Both compare to within SCHEDULE_TOLERANCE, enough for the gap between the
  service reading the clock and the store stamping created_at.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from chalicelib.models import Job, NewJob

SCHEDULE_TOLERANCE = timedelta(seconds=1)
_EXACT_FIELDS = ("type", "payload", "queue", "priority", "max_attempts")


def same_json(a: Any, b: Any) -> bool:
    """Equal as JSON values: Python's == says True == 1 and would call them equal."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, dict):
        return (
            isinstance(b, dict)
            and a.keys() == b.keys()
            and all(same_json(value, b[key]) for key, value in a.items())
        )
    if isinstance(a, list | tuple):
        return (
            isinstance(b, list | tuple)
            and len(a) == len(b)
            and all(same_json(x, y) for x, y in zip(a, b, strict=True))
        )
    if isinstance(a, int | float) and isinstance(b, int | float):
        return a == b
    return type(a) is type(b) and bool(a == b)


def schedule_field(run_at: datetime | None) -> str:
    """The field a client used to set the schedule, to name it in a conflict."""
    return "run_at" if run_at is not None else "delay"


def _same_schedule(run_at: datetime | None, delay: float | None, existing: Job) -> bool:
    created = existing.created_at
    if run_at is not None:
        if run_at <= created:  # already past when first asked for: it meant "at once"
            return existing.run_at - created <= SCHEDULE_TOLERANCE
        return abs(existing.run_at - run_at) <= SCHEDULE_TOLERANCE
    offset = timedelta(seconds=delay or 0)
    return abs((existing.run_at - created) - offset) <= SCHEDULE_TOLERANCE


def differences(
    new: NewJob,
    run_at: datetime | None,
    delay: float | None,
    existing: Job,
    callback_url: str | None,
) -> list[str]:
    """The fields in which `new` (requested with this run_at or delay) differs from
    `existing`, whose stored callback URL is `callback_url`."""
    fields = [
        name for name in _EXACT_FIELDS if not same_json(getattr(new, name), getattr(existing, name))
    ]
    if new.callback_url != callback_url:
        fields.append("callback_url")
    if existing.started_at is None and not _same_schedule(run_at, delay, existing):
        fields.append(schedule_field(run_at))
    return fields


def batch_differences(first: NewJob, later: NewJob, later_run_at: datetime | None) -> list[str]:
    """Two jobs of one batch under one key: the fields in which the later differs.

    Both were resolved against (nearly) the same clock reading, so their computed
    run_at instants compare directly, whichever of delay or run_at each used.
    """
    fields = [
        name for name in _EXACT_FIELDS if not same_json(getattr(first, name), getattr(later, name))
    ]
    if first.callback_url != later.callback_url:
        fields.append("callback_url")
    if abs(first.run_at - later.run_at) > SCHEDULE_TOLERANCE:
        fields.append(schedule_field(later_run_at))
    return fields

"""Reading back a job row a SQL or Redis store wrote, when it no longer reads.

A row is our own write, so the stores skip validation (the claim hot path). But a row
may be older than a rule (a result holding an integer of more than 4,300 digits,
stored before the worker refused one), edited by hand, cut short, or of a type its
column does not hold. One such row must stay that job's problem only: before, SQLite,
Postgres and Redis raised from their row decoder, so `GET /status` answered 500, every
page of the tenant's `GET /jobs` holding it answered 500 too, and a worker whose
claim batch held it lost the whole batch (claimed, running, never run) and logged
"store unavailable" on every poll.

The answer, the same as DynamoDB's (docs/aws.md, "A damaged record"):

- a payload or result that is not JSON (or a payload that is JSON but not an object)
  reads as a marker in its place, ``{"error": "payload_unreadable" |
  "result_unreadable", "message": "..."}``, and the rest of the job as stored;
- any other field that cannot be read (an unknown state, a time or a count of the
  wrong type, a field missing) raises JobUnreadable naming the job and the field's
  problem, never its payload: get and cancel answer with it, listings leave the row
  out with a WARNING (readable_page), and a claim makes it dead without running it.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from chalicelib import attempt_record
from chalicelib.errors import JobUnreadable
from chalicelib.models import Completion, Job, JobState

log = logging.getLogger(__name__)

# What a decoder raises on a row in a shape the store does not write (AssertionError:
# the Redis decoder asserts a field is present).
BAD_SHAPE = (KeyError, ValueError, TypeError, OverflowError, AttributeError, AssertionError)
MAX_WHY_CHARS = 200
DIGITS = sys.int_info.default_max_str_digits
_INT_LIMIT = re.compile(r"Exceeds the limit \(\d+ digits\) for integer string conversion")

_JSON_KINDS: dict[type, str] = {
    list: "array", str: "string", int: "number", float: "number", bool: "boolean",
    type(None): "null",
}  # fmt: skip


# NaN, Infinity and -Infinity read as floats, as json.loads reads them: rows written
# before non-finite numbers were refused hold them, and the API answers them as null
# (json_encode.dumps; tests/test_input_bounds.py), the rest of the value intact.
_DECODER = json.JSONDecoder()


def why_not_json(exc: BaseException) -> str:
    """Why a stored value does not read: "is not valid JSON (...)", "holds an integer of..."."""
    if isinstance(exc, json.JSONDecodeError):
        return f"is not valid JSON ({exc.msg} at character {exc.pos})"
    if isinstance(exc, UnicodeDecodeError):
        return f"is not valid UTF-8 (byte {exc.start})"
    if isinstance(exc, ValueError) and _INT_LIMIT.search(str(exc)):
        return (
            f"holds an integer of more than {DIGITS} digits, which Python does not read "
            "(stored before Spool refused such values; rewrite it as a string)"
        )
    if isinstance(exc, RecursionError):
        return "is nested too deep to read"
    return f"is not valid JSON ({type(exc).__name__})"


def decode(raw: str | bytes) -> Any:
    """Stored JSON text as a value; ValueError for what no Spool writer stores (text
    that is not JSON or not UTF-8, an integer past Python's default)."""
    return _DECODER.decode(raw if isinstance(raw, str) else raw.decode())


def stored_json(job_id: str, kind: str, raw: str | bytes) -> Any:
    """The JSON value of a stored payload or result, or the marker that takes its place
    when it cannot be read (logged, with why, never the value)."""
    try:
        value = decode(raw)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, UnicodeDecodeError
        message = f"its {kind}, kept in the job's record, {why_not_json(exc)}"
    else:
        if kind != "payload" or isinstance(value, dict):
            return value
        held = _JSON_KINDS.get(type(value), type(value).__name__)
        message = (
            f"its payload, kept in the job's record, is not a JSON object (it holds a JSON {held})"
        )
    log.warning("job %s: %s", job_id, message)
    return Marker(error=f"{kind}_unreadable", message=message)


class Marker(dict[str, str]):
    """What stored_json puts in place of a value it cannot read: a dict like any JSON
    object to every reader, but of its own type, so a claim tells it from a payload a
    client sent with the same keys (which runs as any other)."""


def unreadable(value: Any) -> str | None:
    """The message of a payload marker stored_json made, else None. Only a claim asks,
    of a job it is about to run: its handler must not be given the marker."""
    return value["message"] if type(value) is Marker else None


def state_of(value: str, states: dict[str, Any]) -> Any:
    """The JobState stored as `value`; ValueError naming it when Spool has none such."""
    found = states.get(value)
    if found is None:
        raise ValueError(f"unknown state {value[:40]!r}")
    return found


def counted_state(queue: str | None, value: str, n: int, states: dict[str, Any]) -> Any:
    """The JobState a count row names, or None (with a WARNING saying how to find the
    jobs) for a state Spool does not know: a row set to it by hand is counted under it
    by SQLite's triggers, and the scrape and the dashboard's overview failed on it."""
    found = states.get(value)
    if found is None:
        log.warning(
            "%d job(s) of queue %r are in state %r, which Spool does not know: left out of "
            "the counts; find them with SELECT id FROM jobs WHERE state = %r, then repair "
            "or delete them",
            n,
            queue,
            value[:40],
            value[:40],
        )
    return found


def why(exc: BaseException) -> str:
    """What is wrong, in a line: the exception's type and its message, cut short.
    Never given a payload: the decoders' messages name fields and positions."""
    text = str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc)
    return f"{type(exc).__name__}: {text}"[:MAX_WHY_CHARS]


def damaged(job_id: str, exc: BaseException) -> JobUnreadable:
    """The JobUnreadable for a row in a bad shape, logged."""
    return unreadable_record(job_id, why(exc))


def unreadable_record(job_id: str, reason: str, kept_as: str = "row") -> JobUnreadable:
    """The JobUnreadable naming a job whose stored record (a `kept_as`: a row, a
    DynamoDB item) cannot be read, and why, logged: one wording on every store."""
    log.warning("job %s: its record cannot be read: %s", job_id, reason)
    unreadable = JobUnreadable(
        f"job {job_id}'s stored record cannot be read ({reason}); "
        f"its operator must repair or delete the {kept_as}",
        {"id": job_id},
    )
    unreadable.reason = reason
    return unreadable


def readable(to_job: Callable[[Sequence[Any]], Job], rows: Sequence[Any]) -> list[Job]:
    """The jobs of `rows` that can be read; a row that cannot is left out (logged by
    `to_job`), so one damaged row cannot fail every page holding it."""
    jobs: list[Job] = []
    for row in rows:
        try:
            jobs.append(to_job(row))
        except JobUnreadable:
            continue
    return jobs


def page_end(
    rows: Sequence[Any],
    jobs: Sequence[Job],
    limit: int,
    key_of: Callable[[Any], tuple[datetime, str]],
) -> tuple[datetime, str] | None:
    """Where the next page starts, after the page's last row (not its last readable
    job: a page whose rows were all left out still moves on): None on the last page.
    A last row whose own place (created_at) is damaged ends the page at the last job
    before it, so the next page begins with it and goes on past it; a page of one row,
    that one, cannot go on and answers JobUnreadable naming it."""
    if len(rows) <= limit:
        return None
    try:
        return key_of(rows[limit - 1])
    except BAD_SHAPE as exc:
        if jobs:
            return jobs[-1].created_at, jobs[-1].id
        raise damaged(_first_text(rows[limit - 1]), exc) from exc


def _first_text(row: Sequence[Any]) -> str:
    first = row[0]
    if isinstance(first, bytes):
        return first.decode("utf-8", "replace")
    return str(first)


@dataclass(frozen=True)
class Unrunnable:
    """A job a claim took whose row cannot be run: what its finish needs, read from the
    fields the claim itself wrote (lease token, attempt count, start), and why."""

    job_id: str
    lease_token: str
    attempt: int
    started_at: datetime
    why: str


def runnable(
    rows: Sequence[Any],
    to_job: Callable[[Sequence[Any]], Job],
    claimed: Callable[[Sequence[Any]], Unrunnable],
) -> tuple[list[Job], list[Unrunnable]]:
    """The jobs a claim may run, and those it must not: a row in a bad shape, or one
    whose payload is not JSON (its handler would be given the marker). The claim has
    committed, so a raise here would strand every job claimed with this one (running,
    an attempt spent, never run) and the next claim would take the bad row again."""
    jobs: list[Job] = []
    bad: list[Unrunnable] = []
    for row in rows:
        try:
            job = to_job(row)
        except JobUnreadable as exc:
            found = exc.reason or why(exc.__cause__ or exc)
            reason = f"the job's stored record cannot be read ({found})"
            bad.append(replace(claimed(row), why=reason))
            continue
        problem = unreadable(job.payload)
        if problem is None:
            jobs.append(job)
        else:
            bad.append(replace(claimed(row), why=problem))
    return jobs, bad


def bury(store: Any, bad: Sequence[Unrunnable], now: datetime) -> None:
    """Make dead, without running them, the claimed jobs `runnable` refused, through the
    store's own finish (counters, attempt history and webhooks as for any dead job),
    with a last_error that says what is wrong and what to do. Never raises: the jobs
    claimed with them still run; a finish that fails leaves the lease to expire."""
    for one in bad:
        message = f"{one.why}, so it was not run; repair the row and redrive the job, or delete it"
        settle_unrun(
            store,
            Completion(one.job_id, one.lease_token, JobState.DEAD, None, message, None),
            attempt=one.attempt,
            started_at=one.started_at,
            now=now,
            error_type="JobUnreadable",
        )


def settle_unrun(
    store: Any,
    completion: Completion,
    *,
    attempt: int,
    started_at: datetime,
    now: datetime,
    error_type: str,
) -> bool:
    """Finish a claimed job its handler was never given (its record or payload cannot
    be read), recording the attempt as the worker records one. Never raises: the jobs
    claimed with it still run, and a finish that fails leaves the lease to expire and
    the reaper to return the job. True when the finish applied."""
    record = attempt_record.record(
        completion,
        number=attempt,
        started_at=started_at,
        finished_at=now,
        failure=None,
        traceback_limit=0,
        error_type=error_type,
    )
    try:
        applied = bool(store.finish([record])[0])
    except Exception:
        log.exception(
            "job %s was claimed but %s; it could not be settled either, so its lease "
            "will expire and the reaper will return it",
            completion.job_id,
            completion.error,
        )
        return False
    if applied:
        log.error(
            "job %s: %s; %s without running it",
            completion.job_id,
            completion.error,
            completion.state.value,
        )
    return applied


def history_marker(exc: JobUnreadable) -> dict[str, str]:
    """What a job's answer shows, beside an empty attempt_history, when its attempt
    history does not read (edited by hand, cut short): the job itself reads, so it is
    shown, as a payload that does not read is (a marker in its place). Before, the
    whole answer was 500 job_unreadable, and the dashboard's cancel, which answers with
    the job's history, said 500 after the cancel was made."""
    reason = exc.reason or why(exc.__cause__ or exc)
    return {
        "error": "attempt_history_unreadable",
        "message": f"its attempt history, kept in the job's record, cannot be read ({reason})",
    }


def attempts_or_marker(
    store: Any, job_id: str, tenant: str | None
) -> tuple[list[Any], dict[str, str] | None] | None:
    """The job's attempts and None, or [] and history_marker when they do not read;
    None when the job is gone (purged since it was read)."""
    try:
        found = store.attempts(job_id, tenant)
    except JobUnreadable as exc:
        return [], history_marker(exc)
    return None if found is None else (found, None)

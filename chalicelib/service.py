"""What the routes and the command line call: enqueue, status, list, cancel, redrive.

Validation happens here, before the store is touched, so refused input writes nothing.
An idempotency key reused for a different request is refused too (409, see
chalicelib/idempotency.py for what counts as different and `enqueue` for batches).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator, Sequence
from contextlib import nullcontext
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Annotated, Any, Protocol

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    StringConstraints,
    WithJsonSchema,
    field_validator,
)
from pydantic_core import PydanticCustomError

from chalicelib import client_text
from chalicelib.attempt_ceiling import DEFAULT_ATTEMPTS_CEILING as DEFAULT_ATTEMPTS_CEILING
from chalicelib.attempt_ceiling import RedriveAttempts, attempts_for
from chalicelib.attempt_ceiling import attempts_ceiling as read_ceiling
from chalicelib.config import MAX_KEY_LENGTH as MAX_KEY_LENGTH  # the command line's options
from chalicelib.config import MAX_PRIORITY, MIN_PRIORITY, Settings
from chalicelib.config import NAME_PATTERN as NAME_PATTERN  # its users import it from here
from chalicelib.errors import (
    IdempotencyConflict,
    JobNotFound,
    RateLimited,
    StoreUnavailable,
    ValidationFailed,
)
from chalicelib.handlers import Registry
from chalicelib.idempotency import batch_differences, differences
from chalicelib.ids import looks_like_job_id, new_job_id, new_job_ids
from chalicelib.jsonstrict import is_finite_json
from chalicelib.logs import job_event, together
from chalicelib.models import AddResult, Job, JobPage, JobQuery, JobState, NewJob
from chalicelib.storage.base import Backlog, BacklogFull, JobStore
from chalicelib.timebounds import BOUND_TEXT, MAX_DELAY, MAX_DELAY_SECONDS, to_utc

# Whole dead jobs one store call of a bulk redrive hands back (listed, then redriven):
# a job may carry a 256 KiB payload, and a redrive of 1000 read 500 at a time.
REDRIVE_STEP = 50


class Charge(Protocol):
    """What a redrive takes before it moves jobs (the HTTP edge's enqueue bucket,
    EnqueueGate.redrive_charge): `take(n)` raises to refuse n jobs; `give_back(n)`
    returns what was taken for jobs the store did not move, so a redrive costs the
    jobs it moved, never the ids it was handed."""

    def take(self, jobs: int) -> None: ...

    def give_back(self, jobs: int) -> None: ...


# RFC 3339's date-time (section 5.6; 'T' and 'Z' may be lower case): the format the
# OpenAPI document names. pydantic also takes "1800000000" (Unix seconds, no zone
# asked), a space for 'T', no seconds, "+0530": a client's typo became a time. The
# seconds' fraction has any number of digits (time-secfrac = "." 1*DIGIT), kept to
# the microsecond: a 10th digit was refused as "not RFC 3339", which it is.
RFC3339 = re.compile(
    r"\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:[Zz]|[+-]\d{2}:\d{2})", re.ASCII
)


def parse_rfc3339(value: str, name: str) -> datetime:
    """`value` as RFC 3339 demands (an offset or Z, seconds, 'T'); ValueError naming
    `name` otherwise. The datetime keeps the offset it was given (see to_utc)."""
    if RFC3339.fullmatch(value) is None:
        zone = "" if re.search(r"(?:[Zz]|[+-]\d{2}:?\d{2})$", value) else ", with a time zone"
        raise ValueError(
            f"{name} must be an RFC 3339 date-time{zone}, such as 2030-01-01T00:00:00Z"
        )
    try:
        return datetime.fromisoformat(value.upper())
    except ValueError as exc:  # 23:59:60, 30 February
        raise ValueError(f"{name} is not a date-time that exists: {exc}") from None


# An idempotency key: 1 to 200 characters, none of them a control character (the
# document's pattern; the field's validator enforces it and names the character).
KeyText = Annotated[
    str,
    StringConstraints(min_length=1, max_length=MAX_KEY_LENGTH),
    WithJsonSchema(
        {
            "type": "string",
            "minLength": 1,
            "maxLength": MAX_KEY_LENGTH,
            "pattern": client_text.SCHEMA_PATTERN,
        }
    ),
]


class EnqueueRequest(BaseModel):
    """One job as a client may describe it. Server-owned fields (state, attempts,
    tenant, id, ...) are refused, not ignored, so a client never thinks it set them."""

    model_config = ConfigDict(extra="forbid")

    type: str = Field(min_length=1, max_length=64, pattern=NAME_PATTERN)
    payload: dict[str, JsonValue] = Field(default_factory=dict)
    queue: str | None = Field(default=None, pattern=NAME_PATTERN)
    priority: int | None = Field(default=None, ge=MIN_PRIORITY, le=MAX_PRIORITY)
    delay: float | None = Field(
        default=None,
        ge=0,
        le=MAX_DELAY_SECONDS,
        allow_inf_nan=False,
        description=f"Seconds to wait before the first run, {BOUND_TEXT}; or give run_at.",
    )
    run_at: datetime | None = Field(
        default=None,
        description=f"When to run, with a time zone; {BOUND_TEXT} of now (as delay). "
        "A time already past means at once.",
    )
    max_attempts: int | None = Field(
        default=None,
        ge=1,
        description="Tries before the job goes dead; default: the handler's. At most "
        "SPOOL_MAX_ATTEMPTS (25 unless the operator set it), or the handler's own default "
        "when that is higher: more is 422 naming the ceiling.",
    )
    idempotency_key: KeyText | None = Field(
        default=None,
        description=f"1 to {MAX_KEY_LENGTH} characters: the same key again answers the job "
        f"it first made. Text only: {client_text.REFUSED_TEXT} (422).",
    )
    callback_url: str | None = Field(
        default=None,
        min_length=1,
        max_length=2048,
        description="Where to POST a signed webhook when the job finishes (succeeded, "
        "dead or cancelled); see docs/webhooks.md. Without it, the tenant's default "
        "endpoint, if the operator set one. http or https, a public host, and by default "
        "port 80, 443 or 1024-65535 (SPOOL_WEBHOOK_PORTS).",
    )

    @field_validator("idempotency_key")
    @classmethod
    def _key_text(cls, value: str | None) -> str | None:
        """No control character (chalicelib/client_text.py): a key is stored, logged,
        shown and looked up as it came. The refusal names the character by its code
        point, in its own error type, under the field's loc."""
        if value is None:
            return None
        refused = client_text.refusal(value)
        if refused is not None:  # loc names the field; the message says what it holds
            raise PydanticCustomError(refused.kind, refused.message("the idempotency key"))
        return value

    @field_validator("run_at", mode="before")
    @classmethod
    def _rfc3339(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        # Parsed here: the API validates strictly, where a string that left a "before"
        # validator is no datetime at all (every run_at was refused).
        return parse_rfc3339(value, "run_at")

    @field_validator("run_at")
    @classmethod
    def _aware_utc(cls, value: datetime | None) -> datetime | None:
        """Normalized to UTC here, so no later arithmetic meets an offset that overflows."""
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("run_at needs a time zone (e.g. 2030-01-01T00:00:00Z)")
        try:
            return to_utc(value)
        except ValueError as exc:
            raise ValueError(f"run_at {exc}") from None


class Service:
    def __init__(
        self, store: JobStore, registry: Registry, settings: Settings | None = None
    ) -> None:
        self.store = store
        self.registry = registry
        self.settings = settings  # None: the process environment's (read when needed)
        self._attempts_ceiling: int | None = None

    def build(
        self,
        request: EnqueueRequest,
        tenant: str,
        job_id: str | None = None,
        admitted: bool = False,
    ) -> NewJob:
        """The job to store for `request`. `admitted`: the caller has run the handler's
        admit check for this request and tenant already (`spool enqueue` does, before it
        opens the store), so it is not run again: a hook with an effect (a quota each
        admitted job spends) was charged twice for one job."""
        spec = self.registry.get(request.type)
        payload = spec.validate(request.payload, None if admitted else tenant)
        if not is_finite_json(payload):
            # HTTP bodies are refused earlier (400); this guards every other caller.
            raise ValidationFailed(
                "payload holds NaN or Infinity, which JSON cannot carry", {"field": "payload"}
            )
        now = self.store.clock.now()
        if request.delay is not None and request.run_at is not None:
            raise ValidationFailed("give delay or run_at, not both")
        run_at = now
        if request.delay:
            run_at = now + timedelta(seconds=request.delay)
        elif request.run_at is not None:
            if request.run_at - now > MAX_DELAY:  # run_at is UTC: its validator made it so
                raise ValidationFailed(
                    f"run_at must be {BOUND_TEXT} of now, the same bound as delay",
                    {
                        "field": "run_at",
                        "max_seconds": MAX_DELAY_SECONDS,
                        "latest": (now + MAX_DELAY).isoformat(),
                    },
                )
            run_at = max(now, request.run_at)
        return NewJob(
            id=job_id or new_job_id(),
            type=request.type,
            payload=payload,
            run_at=run_at,
            tenant=tenant,
            queue=request.queue or spec.queue,
            priority=spec.priority if request.priority is None else request.priority,
            max_attempts=attempts_for(
                request.max_attempts, spec.type, spec.retry.max_attempts, self.attempts_ceiling()
            ),
            idempotency_key=request.idempotency_key,
            callback_url=self._callback_url(request.callback_url, tenant),
        )

    def attempts_ceiling(self) -> int:
        """The operator's attempts ceiling (attempt_ceiling), read once. The HTTP edge
        reads it as it starts, so a malformed SPOOL_MAX_ATTEMPTS is its misconfigured
        answer (and `spool serve`'s start-up error), not a 500 on every enqueue."""
        ceiling = self._attempts_ceiling
        if ceiling is None:
            settings = self.settings
            if settings is None:  # read the environment once, not once per job
                settings = self.settings = Settings.from_env()
            ceiling = self._attempts_ceiling = read_ceiling(settings)
        return ceiling

    def _callback_url(self, requested: str | None, tenant: str) -> str | None:
        """The job's webhook endpoint (chalicelib/webhooks/enqueue.py decides)."""
        settings = self.settings
        if settings is None:  # read the environment once, not once per job
            settings = self.settings = Settings.from_env()
        from chalicelib.webhooks import source

        if requested is None and not source.configured(settings):
            return None
        from chalicelib.webhooks.enqueue import callback_for  # only when webhooks are used

        return callback_for(requested, tenant, settings)

    def enqueue(
        self, requests: Sequence[EnqueueRequest], tenant: str, admitted: bool = False
    ) -> list[AddResult]:
        """Validate every job, then store them; an idempotency key reused for a
        different request is refused with IdempotencyConflict (409).

        Invalid jobs (422), and two jobs of one batch that share a key but differ
        (409), are refused before anything is stored. Whether a key is already
        taken by a different job is known only once the store's add has looked
        (the store has no read by key), so a batch that mixes keyed and unkeyed
        jobs is added in two steps, the keyed jobs first: on a conflict none of
        the unkeyed jobs is stored, and the keyed jobs that were stored are named
        in the error. Sending the corrected batch again then creates every job
        exactly once (the stored keyed jobs come back as created=False), so
        nothing is lost and nothing doubled. The same holds if the store fails
        between the two steps (503), or a backlog cap finds no room left for the
        unkeyed jobs there (429: another process took it in between): the keyed
        jobs stand, and a retry completes the batch. A batch without keys is one
        all-or-nothing add; a batch of keyed jobs alone stores those whose keys
        were free, as above.
        """
        return self.add_prepared(requests, self.prepare(requests, tenant, admitted))

    def prepare(
        self, requests: Sequence[EnqueueRequest], tenant: str, admitted: bool = False
    ) -> list[NewJob]:
        """The jobs enqueue would store, or the 422/409 it would refuse them with: the
        HTTP route checks them before a tenant's enqueue limit spends a token on them.
        Each job's admit check runs here, once, unless the caller ran it (`admitted`)."""
        built = self._build_all(requests, tenant, admitted)
        _refuse_keys_reused_in_batch(requests, built)
        return built

    def add_prepared(
        self,
        requests: Sequence[EnqueueRequest],
        built: Sequence[NewJob],
        cap: Backlog | None = None,
        answered: list[AddResult] | None = None,
    ) -> list[AddResult]:
        """Store what `prepare` made of `requests` (enqueue's second half). With a
        backlog `cap` (the HTTP edge's quota) the store refuses, storing nothing, an add
        that would take the tenant's waiting jobs past it (BacklogFull). A mixed batch's
        keyed part must leave room for its unkeyed part too (Backlog.more); should the
        backlog fill between the two adds, the keyed jobs stand, as after a 503 there.
        `answered`, when given, gets each add's results as the store answers, before a
        409 or the second add's failure ends the call: what the edge's enqueue tokens
        pay for (EnqueueGate.admitted)."""
        if len(built) == 1:  # a single enqueue: no parts to split, no lines to hold
            [result] = self._add([built[0]], cap, answered)
            _log_enqueued(result)
            if built[0].idempotency_key is not None:
                _refuse_conflicts(requests, built, [result])
            return [result]
        keyed = [i for i, new in enumerate(built) if new.idempotency_key is not None]
        plain = [i for i, new in enumerate(built) if new.idempotency_key is None]
        results: list[AddResult | None] = [None] * len(built)
        with together() if len(built) > 1 else nullcontext():  # a batch's lines: one write
            for part in (keyed, plain):
                if not part:
                    continue
                more = len(plain) if part is keyed and cap is not None else 0
                added = self._add(
                    [built[i] for i in part],
                    None if cap is None else replace(cap, more=more),
                    answered,
                )
                for index, result in zip(part, added, strict=True):
                    results[index] = result
                    _log_enqueued(result)  # before a conflict is raised: these are stored
                if part is keyed:
                    _refuse_conflicts(requests, built, results)
        return [r for r in results if r is not None]

    def redrive_ids(
        self,
        ids: Sequence[str],
        tenant: str | None,
        cap: Backlog | None,
        charge: Charge | None = None,
    ) -> list[Job]:
        """The store's redrive of these ids, given the cap only when there is one (the
        call as it always was without: wrappers and fakes take ids and tenant alone).
        `charge`, when given, takes a token for each distinct id first and raises to
        refuse them all (the HTTP edge's enqueue bucket: a redrive takes a token a job,
        on every store, since every redrive comes through here); the tokens of ids the
        store did not move (unknown, another tenant's, not dead, held back by the cap)
        are given back at once. Taken per id moved after the move, a refusal would come
        too late; taken per id named and kept, a list with a typo in it cost the
        tenant allowance for jobs that never moved."""
        ids = list(dict.fromkeys(ids))  # an id named twice moves (and costs) once
        if charge is None:
            return self._redrive(ids, tenant, cap)
        charge.take(len(ids))
        try:
            moved = self._redrive(ids, tenant, cap)
        except BacklogFull:  # refused whole: nothing moved
            _give_back(charge, len(ids))
            raise
        _give_back(charge, len(ids) - len(moved))
        return moved

    def _redrive(self, ids: Sequence[str], tenant: str | None, cap: Backlog | None) -> list[Job]:
        return self.store.redrive(ids, tenant, cap, attempts=self.redrive_attempts())

    def redrive_attempts(self) -> RedriveAttempts:
        """What a redriven job's max_attempts is cut to: attempts_for's bound, the larger
        of the ceiling and the handler's default (its loaded handlers': a deferred
        built-in is not imported for a redrive, and none defaults above 25)."""
        ceiling = self.attempts_ceiling()
        above = {
            spec.type: spec.retry.max_attempts
            for spec in self.registry.loaded_specs()
            if spec.retry.max_attempts > ceiling
        }
        return RedriveAttempts(ceiling, above)

    def _add(
        self,
        jobs: Sequence[NewJob],
        cap: Backlog | None,
        answered: list[AddResult] | None = None,
    ) -> list[AddResult]:
        # No cap: the call as it always was (wrappers and fakes of add take jobs alone).
        added = self.store.add(jobs) if cap is None else self.store.add(jobs, cap)
        if answered is not None:
            answered.extend(added)
        return added

    def _build_all(
        self, requests: Sequence[EnqueueRequest], tenant: str, admitted: bool = False
    ) -> list[NewJob]:
        problems: list[dict[str, Any]] = []
        built: list[NewJob] = []
        ids = new_job_ids(len(requests))
        for index, request in enumerate(requests):
            try:
                built.append(self.build(request, tenant, ids[index], admitted))
            except ValidationFailed as exc:
                if len(requests) == 1:
                    raise  # keep the precise error (e.g. UnknownJobType) for a single job
                problems.append({"index": index, "message": exc.message, "details": exc.details})
        if problems:
            raise ValidationFailed("some jobs in the batch are invalid; none were stored", problems)
        return built

    def status(self, job_id: str, tenant: str | None) -> Job:
        job = self.store.get(_known_form(job_id), tenant)
        if job is None:
            raise JobNotFound("job not found", {"id": job_id})
        return job

    def cancel(self, job_id: str, tenant: str | None) -> Job:
        job = self.store.cancel(_known_form(job_id), tenant)
        job_event(logging.INFO, "cancelled", job)
        return job

    def list_jobs(self, query: JobQuery) -> JobPage:
        return self.store.list_jobs(query)

    def redrive(
        self,
        job_id: str,
        tenant: str | None,
        cap: Backlog | None = None,
        charge: Charge | None = None,
    ) -> Job:
        """Back to queued; 409 unless this call moved it. Of concurrent redrives of one
        job exactly one answers 200 on every store (a loser used to answer 200 with
        the winner's job on some, so no caller could tell whether its call did it).
        With a backlog `cap`, BacklogFull when the tenant's backlog has no room for it;
        `charge` as redrive_ids takes it, before the job moves."""
        for _ in range(2):  # a second try only if the job died again in between
            self.redrivable(job_id, tenant)
            moved = self.redrive_ids([job_id], tenant, cap, charge)
            if moved:
                job_event(logging.INFO, "redriven", moved[0])
                return moved[0]
        return self.status(job_id, tenant)

    def redrivable(self, job_id: str, tenant: str | None) -> Job:
        """The job, when it may be redriven (it is dead); NotFound (unknown, or another
        tenant's) or InvalidTransition (409) otherwise."""
        job = self.status(job_id, tenant)
        if job.state is not JobState.DEAD:
            from chalicelib.errors import InvalidTransition

            raise InvalidTransition(
                f"only dead jobs can be redriven; this one is {job.state.value}",
                {"state": job.state.value},
            )
        return job

    def redrive_bound(self) -> datetime:
        """The `died_before` of a bulk redrive whose caller gave none: the first instant
        after the store's clock reads now (times are kept to the microsecond), so every
        job already dead when the call began is included, and none that dies later."""
        return self.store.clock.now() + timedelta(microseconds=1)

    def redrive_all(
        self,
        tenant: str | None,
        queue: str | None = None,
        type_: str | None = None,
        limit: int = 1000,
        died_before: datetime | None = None,
    ) -> list[Job]:
        """Redrive dead jobs matching the filter, a page at a time, up to `limit`
        (the jobs redriving() yields, kept)."""
        return list(self.redriving(tenant, queue, type_, limit, died_before=died_before))

    def redriving(
        self,
        tenant: str | None,
        queue: str | None = None,
        type_: str | None = None,
        limit: int = 1000,
        died_before: datetime | None = None,
        cap: Backlog | None = None,
        charge: Charge | None = None,
    ) -> Iterator[Job]:
        """Redrive dead jobs matching the filter, REDRIVE_STEP at a time, up to
        `limit`, yielding each as it is redriven: a caller that keeps only ids holds
        at most a step of whole jobs, never the `limit`.

        With `died_before`, only jobs that became dead strictly before it (their
        finished_at) are redriven; later ones are skipped and the listing goes on
        past them. A caller that calls again with the same bound (`spool dlq
        redrive --all` does) never meets the jobs it redrove that died again since,
        so none is redriven twice and none dead at its start is left behind.
        None: every dead job listed, whenever it died.

        With a backlog `cap` each step moves only what fits beside the tenant's waiting
        jobs (counted by the store in the step's own transaction): the first step that
        finds no room raises BacklogFull, a later one ends the redrive there. So with
        `charge` (redrive_ids), handed each step's jobs before they move: its refusal
        of the first step leaves here, of a later one ends the redrive.
        """
        moved = 0
        cursor: str | None = None
        skipped = 0
        while moved < limit:
            page = self.store.list_jobs(
                JobQuery(
                    tenant=tenant,
                    state=JobState.DEAD,
                    queue=queue,
                    type=type_,
                    # Skipped jobs grow the page (to the most a page holds), so a run
                    # of newer dead jobs costs a few listings, not one per job.
                    limit=min(REDRIVE_STEP, limit - moved + skipped),
                    cursor=cursor,
                    bodies=False,  # ids and times: the redrive reads what it moves
                )
            )
            if not page.jobs:
                break
            due = [j for j in page.jobs if died_before is None or _died_at(j) < died_before]
            skipped += len(page.jobs) - len(due)
            due = due[: limit - moved]
            if due:
                try:
                    redriven = self.redrive_ids([j.id for j in due], tenant, cap, charge)
                except (BacklogFull, RateLimited):  # the cap's or the charge's refusal
                    if moved == 0:
                        raise
                    return
                for job in redriven:
                    job_event(logging.INFO, "redriven", job)
                moved += len(redriven)
                yield from redriven
            if page.next_cursor is None:
                break
            cursor = page.next_cursor


def _give_back(charge: Charge, jobs: int) -> None:
    """Return the tokens of jobs a redrive did not move. The jobs it moved are moved:
    a store that cannot take the tokens back now fails the refund, not the redrive
    (the tenant waits a refill it need not have, the caller is told what moved)."""
    if jobs <= 0:
        return
    try:
        charge.give_back(jobs)
    except StoreUnavailable as exc:
        logging.getLogger("spool.service").warning(
            "a redrive's unspent tokens were not given back: %s", exc
        )


def _died_at(job: Job) -> datetime:
    """When a dead job died: its finished_at (every store sets it on the way to dead);
    updated_at for a record that lacks it (nothing moves a dead job but a redrive)."""
    return job.finished_at or job.updated_at


def _refuse_keys_reused_in_batch(requests: Sequence[EnqueueRequest], built: list[NewJob]) -> None:
    """Two jobs of one batch under one key must be the same job; checked before storing."""
    first_at: dict[str, int] = {}
    conflicts: list[dict[str, Any]] = []
    for index, new in enumerate(built):
        key = new.idempotency_key
        if key is None:
            continue
        first = first_at.setdefault(key, index)
        if first == index:
            continue
        fields = batch_differences(built[first], new, requests[index].run_at)
        if fields:
            conflicts.append({"index": index, "same_key_as": first, "fields": fields})
    if conflicts:
        raise IdempotencyConflict(
            "jobs in this batch share an idempotency key but differ; none were stored",
            {"conflicts": conflicts, "stored": []},
        )


def _refuse_conflicts(
    requests: Sequence[EnqueueRequest], built: Sequence[NewJob], results: list[AddResult | None]
) -> None:
    """Raise IdempotencyConflict if any key the store had seen names a different job."""
    conflicts: list[dict[str, Any]] = []
    for index, result in enumerate(results):
        if result is None or result.created:
            continue
        request = requests[index]
        fields = differences(
            built[index], request.run_at, request.delay, result.job, result.callback_url
        )
        if fields:
            conflicts.append({"index": index, "id": result.job.id, "fields": fields})
    if not conflicts:
        return
    if len(built) == 1:
        [conflict] = conflicts
        raise IdempotencyConflict(
            "this idempotency key already names job "
            f"{conflict['id']}, which differs in {', '.join(conflict['fields'])}; "
            "send the same request to get that job, or use a new key",
            {"id": conflict["id"], "fields": conflict["fields"]},
        )
    stored = [
        {"index": i, "id": r.job.id} for i, r in enumerate(results) if r is not None and r.created
    ]
    raise IdempotencyConflict(
        f"{len(conflicts)} job(s) reuse an idempotency key that names a different job; "
        "no job without a key was stored"
        + (f", and {len(stored)} keyed job(s) were (see details.stored)" if stored else ""),
        {"conflicts": conflicts, "stored": stored},
    )


def _log_enqueued(result: AddResult) -> None:
    """One line per job stored; a repeated idempotency key (nothing stored) is DEBUG."""
    job = result.job
    if not result.created:
        job_event(logging.DEBUG, "enqueue_repeated", job, "job enqueue_repeated: key seen")
        return
    delay = (job.run_at - job.created_at).total_seconds()
    job_event(logging.INFO, "enqueued", job, delay_s=round(delay, 3) if delay > 0 else None)


def _known_form(job_id: str) -> str:
    """A job id from a URL or a client, or JobNotFound before any store sees it.

    No stored job has another form (ids.new_job_id), and what a path can carry is
    not always something a store can even look up: a lone surrogate (which an
    API Gateway event can hold) failed SQLite's UTF-8 encoding as a 500."""
    if not looks_like_job_id(job_id):
        raise JobNotFound("job not found", {"id": job_id[:100]})
    return job_id

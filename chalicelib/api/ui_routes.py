"""The dashboard's routes: the page, its static files, and the JSON it reads and acts with.

The page and its files need no key (they hold no data). Every /ui/api/ route
authenticates X-API-Key exactly as the job routes do (Edge.tenant) and shows
or changes only that tenant's jobs; another tenant's job id answers 404.
Bodies and queries are validated like the rest of the API: a bad one is a
4xx with a message and changes nothing.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from chalicelib.api import auth, errors
from chalicelib.api.http import (
    ApiRequest,
    ApiResponse,
    json_response,
)
from chalicelib.api.schemas import newest_cursor_in_range, plain_digits
from chalicelib.api.throttle import RateLimited
from chalicelib.errors import (
    InvalidTransition,
    JobNotFound,
    Misconfigured,
    SpoolError,
)
from chalicelib.ids import looks_like_job_id
from chalicelib.logs import job_event
from chalicelib.models import Job, JobQuery, JobState
from chalicelib.service import NAME_PATTERN, REDRIVE_STEP
from chalicelib.storage import stored_rows
from chalicelib.storage.base import BacklogFull
from chalicelib.ui import page, views

if TYPE_CHECKING:
    from chalicelib.api.routes import Edge
    from chalicelib.storage.base import JobStore

JOB_ID = r"^j_[0-9a-f]{32}$"
PAGE_DEFAULT = 50
PAGE_MAX = 200
ACTION_IDS_MAX = 1000
# "All" acts on at most this many jobs per request; the page repeats while more remain,
# so no single request outlives an API Gateway or Lambda deadline.
ALL_PER_REQUEST = 5000
# Whole jobs one store call hands back to these routes: a job may carry a 256 KiB
# payload (and a result), and what the routes keep of it is a short row or an id, so
# a list of 200 or an action on 5000 holds at most this many whole jobs at a time.
# The API's bulk redrive keeps to the same step (service.REDRIVE_STEP).
READ_STEP = REDRIVE_STEP
NO_STORE = {"Cache-Control": "no-store"}
# What every /ui answer carries unless it set its own (routes.py adds them to errors).
ERROR_HEADERS = {**NO_STORE, **page.SECURITY_HEADERS}
OPERATOR_KEY_HERE = (
    f"that is an operator key ({auth.METRICS_KEYS}): it opens /metrics only. The dashboard "
    f"shows one tenant's jobs: sign in with a tenant key from {auth.API_KEYS}"
)


class NotFound(SpoolError):
    code = "not_found"
    status = 404


class JobsQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    state: JobState | None = None
    queue: str | None = Field(default=None, pattern=NAME_PATTERN)
    type: str | None = Field(default=None, pattern=NAME_PATTERN)
    limit: int = Field(default=PAGE_DEFAULT, ge=1, le=PAGE_MAX)
    cursor: str | None = Field(default=None, min_length=1, max_length=200)
    find: str | None = Field(default=None, min_length=1, max_length=200)

    _cursor = field_validator("cursor")(newest_cursor_in_range)
    # Read as GET /jobs reads its limit: "1_0", " 1", "+5" and "1.0" were ten, one, five, one.
    _limit = field_validator("limit", mode="before")(plain_digits)


class DeadAction(BaseModel):
    """Which dead jobs to act on: these ids, or all (of a queue/type)."""

    model_config = ConfigDict(extra="forbid")

    ids: list[str] | None = Field(default=None, min_length=1, max_length=ACTION_IDS_MAX)
    all: bool = False
    queue: str | None = Field(default=None, pattern=NAME_PATTERN)
    type: str | None = Field(default=None, pattern=NAME_PATTERN)
    # An all action acts on at most this many: the count its confirmation said. Without
    # it, jobs that die while the dialog is open (or a redriven job that dies again
    # before the next step) would be acted on too, beyond what the person agreed to.
    max: int | None = Field(default=None, ge=1)

    @model_validator(mode="before")
    @classmethod
    def _no_nulls(cls, data: Any) -> Any:
        # The document says each field is its type or absent: null is neither, and
        # accepting it would make `"max": null` quietly mean "no cap".
        if isinstance(data, dict):
            nulls = sorted(str(k) for k, v in data.items() if v is None)
            if nulls:
                raise ValueError(f"leave {', '.join(nulls)} out instead of sending null")
        return data

    @field_validator("ids")
    @classmethod
    def _ids(cls, value: list[str] | None) -> list[str] | None:
        for item in value or []:
            if not re.fullmatch(JOB_ID, item):
                raise ValueError("ids must be job ids (j_ and 32 hex digits)")
        return value

    @field_validator("max", mode="before")
    @classmethod
    def _whole(cls, value: Any) -> Any:
        # JSON has one number type: 3.0 is the integer 3 (JSON Schema says so too).
        if isinstance(value, float) and value.is_integer():
            return int(value)
        return value

    @model_validator(mode="after")
    def _one(self) -> DeadAction:
        if (self.ids is None) == (not self.all):
            raise ValueError('send "ids": [...] or "all": true, not both and not neither')
        if self.ids is not None and (self.queue or self.type or self.max is not None):
            raise ValueError("queue, type and max apply only to an all action")
        return self


def _json(data: Any, status: int = 200) -> ApiResponse:
    # The page's own headers too: these answers hold attacker-controlled strings, and
    # nosniff with a CSP keeps a browser from ever reading one as a page.
    return json_response(status, data, {**NO_STORE, **page.SECURITY_HEADERS})


def _tenant(edge: Edge, request: ApiRequest) -> str:
    """The key's tenant; an operator key (for /metrics) is told what the dashboard needs."""
    return edge.tenant(request, OPERATOR_KEY_HERE)


def ui_page(edge: Edge, request: ApiRequest, slash: str = "") -> ApiResponse:
    if slash:  # "/ui/": its relative URLs would resolve under /ui/ui/; send it to "/ui"
        return ApiResponse(308, "", {"Location": "../ui", "Cache-Control": "no-store"})
    body, headers = page.shell()
    return ApiResponse(200, body, headers)


def ui_static(edge: Edge, request: ApiRequest, name: str) -> ApiResponse:
    found = page.static(name)
    if found is None:
        raise NotFound("no such file", {"name": name[:100]})
    body, headers = found
    return ApiResponse(200, body, headers)


def ui_overview(edge: Edge, request: ApiRequest) -> ApiResponse:
    tenant = _tenant(edge, request)
    live = edge.metrics.live_seconds
    return _json(views.overview(edge.runtime.store, tenant, live))


def ui_jobs(edge: Edge, request: ApiRequest) -> ApiResponse:
    tenant = _tenant(edge, request)
    q: JobsQuery = request.params
    store = edge.runtime.store
    if q.find is not None:
        found = [views.job_row(job) for job in _find(store, tenant, q.find)]
        return _json({"jobs": found, "next_cursor": None})
    rows: list[dict[str, Any]] = []
    cursor = q.cursor
    while True:  # READ_STEP jobs at a time (no payloads or results), each as its short row
        page_ = edge.service.list_jobs(
            JobQuery(
                tenant,
                q.state,
                q.queue,
                q.type,
                min(READ_STEP, q.limit - len(rows)),
                cursor,
                newest_first=True,
                bodies=False,  # a row shows neither payload nor result
            )
        )
        rows.extend(views.job_row(j) for j in page_.jobs)
        cursor = page_.next_cursor
        if cursor is None or not page_.jobs or len(rows) >= q.limit:
            return _json({"jobs": rows, "next_cursor": cursor})


def _find(store: JobStore, tenant: str, given: str) -> list[Job]:
    """The job `given` names: a job id, else an idempotency key, as given first and then
    without the blanks around it (pasted with a space). Trimmed first, a key ending in a
    space could not be found, and asking for it answered the job of the key without it."""
    for needle in dict.fromkeys((given, given.strip())):
        if looks_like_job_id(needle):
            job = store.get(needle, tenant)
            if job is not None:
                return [job]
        job = store.get_by_key(tenant, needle) if needle else None
        if job is not None:
            return [job]
    return []


def _detail(edge: Edge, tenant: str, job_id: str) -> ApiResponse:
    job = edge.service.status(job_id, tenant)
    found = stored_rows.attempts_or_marker(edge.runtime.store, job.id, tenant)
    if found is None:  # purged between the two reads
        raise JobNotFound("job not found", {"id": job_id})
    attempts, marker = found
    return _json(views.job_detail(job, attempts, None if marker is None else marker["message"]))


def ui_job(edge: Edge, request: ApiRequest, job_id: str) -> ApiResponse:
    return _detail(edge, _tenant(edge, request), job_id)


def _no_body(edge: Edge, request: ApiRequest) -> None:
    """Cancel and redrive take nothing (the page sends {}): anything else is a client's
    mistake, refused before the job is touched (ApiRequest.no_body, as the API's own)."""
    request.no_body(edge.settings.max_body_bytes)


def ui_cancel(edge: Edge, request: ApiRequest, job_id: str) -> ApiResponse:
    tenant = _tenant(edge, request)
    _no_body(edge, request)
    edge.service.cancel(job_id, tenant)
    edge.cache.drop(tenant, job_id)
    return _detail(edge, tenant, job_id)


def ui_redrive(edge: Edge, request: ApiRequest, job_id: str) -> ApiResponse:
    tenant = _tenant(edge, request)
    _no_body(edge, request)
    edge.redrive_one(tenant, job_id)
    return _detail(edge, tenant, job_id)


def _action(edge: Edge, request: ApiRequest) -> DeadAction:
    data = request.json(edge.settings.max_body_bytes)
    try:
        return DeadAction.model_validate(data, strict=True)  # "yes" is not true
    except ValidationError as exc:
        raise errors.from_validation(exc) from exc


def _dead_ids(
    edge: Edge, tenant: str, action: DeadAction, room: int | None = None
) -> tuple[list[str], bool]:
    """The dead jobs an action names: its ids, or up to ALL_PER_REQUEST (and max, and
    `room`: what the tenant's backlog has left for a redrive) of all."""
    if action.ids is not None:
        return list(dict.fromkeys(action.ids)), False
    ids: list[str] = []
    cursor: str | None = None
    limit = min(ALL_PER_REQUEST, action.max or ALL_PER_REQUEST, room or ALL_PER_REQUEST)
    while len(ids) < limit:
        found = edge.service.list_jobs(
            JobQuery(
                tenant,
                JobState.DEAD,
                action.queue,
                action.type,
                min(READ_STEP, limit - len(ids)),
                cursor,
                bodies=False,  # ids only
            )
        )
        ids.extend(j.id for j in found.jobs)
        cursor = found.next_cursor
        if cursor is None:
            return ids, False
    return ids, True


def _dead_named(edge: Edge, tenant: str, ids: list[str]) -> list[str]:
    """The tenant's dead jobs among the ids named, in their order: what a redrive of
    them would move, so what the backlog's room and the burst are checked against (the
    ids named were: with room for one, one dead job beside two typos was a 429). Read
    with the tenant, another tenant's id is not found, as a typo is: the answer says
    nothing of whether it exists. Only these are handed to the redrive, so its charge
    is theirs too; one that died since this read is not moved (the dashboard shows it
    dead still), one redriven since is skipped by the store."""
    dead: list[str] = []
    for job_id in ids:
        try:
            edge.service.redrivable(job_id, tenant)
        except (JobNotFound, InvalidTransition):
            continue
        dead.append(job_id)
    return dead


def ui_dead_redrive(edge: Edge, request: ApiRequest) -> ApiResponse:
    tenant = _tenant(edge, request)
    action = _action(edge, request)
    exact = None
    named: list[str] | None = None
    if action.ids is not None:
        named = list(dict.fromkeys(action.ids))
        if edge.gate is not None:  # a quota to check: count what would move
            named = _dead_named(edge, tenant, named)
        exact = len(named)
    moved: list[str] = []
    if exact == 0:  # nothing of the tenant's is dead among them: nothing to make room for
        return _json({"done": 0, "ids": moved, "more": False})
    if named is None and edge.nothing_dead(tenant, action.queue, action.type):
        return _json({"done": 0, "ids": moved, "more": False})  # all: none to make room for
    with edge.redrive_room(tenant, exact) as room:  # the backlog quota holds redrives too
        if named is not None:
            ids, more = named, False
        else:
            ids, more = _dead_ids(edge, tenant, action, room)
        cap, charge = edge.backlog_cap(tenant), edge.redrive_charge(tenant)
        for start in range(0, len(ids), READ_STEP):  # each redrive hands its jobs back whole
            step = ids[start : start + READ_STEP]
            try:  # capped: the store moves what still fits (others may have filled it)
                redriven = edge.service.redrive_ids(step, tenant, cap, charge)
            except (BacklogFull, RateLimited):
                if moved:
                    break
                raise
            for job in redriven:
                edge.cache.drop(tenant, job.id)
                job_event(logging.INFO, "redriven", job)
                moved.append(job.id)
    return _json({"done": len(moved), "ids": moved, "more": more})


def ui_dead_purge(edge: Edge, request: ApiRequest) -> ApiResponse:
    tenant = _tenant(edge, request)
    ids, more = _dead_ids(edge, tenant, _action(edge, request))
    gone: list[str] = []
    # A step per store call, as the redrive above: each is its own write transaction,
    # so another tenant's enqueue waits for one step, not for up to ALL_PER_REQUEST
    # deletions (5,000 jobs of 20 KB held SQLite's write lock for 1.1 s).
    for start in range(0, len(ids), READ_STEP):
        for job_id in edge.runtime.store.discard(ids[start : start + READ_STEP], tenant):
            edge.cache.drop(tenant, job_id)
            gone.append(job_id)
    return _json({"done": len(gone), "ids": gone, "more": more})


def ui_schedules(edge: Edge, request: ApiRequest) -> ApiResponse:
    tenant = _tenant(edge, request)
    from chalicelib import periodic

    if tenant != periodic.SYSTEM_TENANT:  # not even whether SPOOL_SCHEDULES is well-formed
        return _json(views.hidden(periodic.SYSTEM_TENANT))
    try:
        active = periodic.active_schedules(edge.settings)
    except ValueError as exc:
        # A malformed SPOOL_SCHEDULES: every request would fail the same way. The log
        # names it for the operator; the tenant gets a 503, not a 500 and a traceback.
        errors.log.error("the dashboard cannot list schedules: %s", exc)
        raise Misconfigured() from None
    return _json(views.schedules(edge.runtime.store, active, tenant, periodic.SYSTEM_TENANT))


OPERATIONS: Mapping[str, Callable[..., ApiResponse]] = {
    "ui_page": ui_page,
    "ui_static": ui_static,
    "ui_overview": ui_overview,
    "ui_jobs": ui_jobs,
    "ui_job": ui_job,
    "ui_cancel": ui_cancel,
    "ui_redrive": ui_redrive,
    "ui_dead_redrive": ui_dead_redrive,
    "ui_dead_purge": ui_dead_purge,
    "ui_schedules": ui_schedules,
}

# The routes that take query parameters (chalicelib/api/query.py reads them).
QUERIES: Mapping[str, type[BaseModel]] = {"ui_jobs": JobsQuery}

ROUTES: Mapping[str, tuple[str, str]] = {
    "ui_page": ("GET", "/ui"),
    "ui_static": ("GET", "/ui/static/{name}"),
    "ui_overview": ("GET", "/ui/api/overview"),
    "ui_jobs": ("GET", "/ui/api/jobs"),
    "ui_job": ("GET", "/ui/api/jobs/{id}"),
    "ui_cancel": ("POST", "/ui/api/jobs/{id}/cancel"),
    "ui_redrive": ("POST", "/ui/api/jobs/{id}/redrive"),
    "ui_dead_redrive": ("POST", "/ui/api/dead/redrive"),
    "ui_dead_purge": ("POST", "/ui/api/dead/purge"),
    "ui_schedules": ("GET", "/ui/api/schedules"),
}

"""What each HTTP route does, in plain Python: authenticate, parse, call the
service, shape the answer. app.py calls `handle(name, request, ...)`.

One Edge per runtime holds what lives as long as the process: the keyring,
the result cache and the metrics.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, get_args

from pydantic import BaseModel, ValidationError

from chalicelib import runtime as runtime_module
from chalicelib.api import errors
from chalicelib.api.auth import Keyring
from chalicelib.api.cache import ResultCache
from chalicelib.api.http import ApiRequest, ApiResponse, dumps, json_response, parse_json
from chalicelib.api.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from chalicelib.api.schemas import (
    SERVER_OWNED,
    DlqQuery,
    ListQuery,
    RedriveAllRequest,
    StatusQuery,
    job_view,
)
from chalicelib.errors import PayloadTooLarge, ValidationFailed
from chalicelib.handlers import Registry
from chalicelib.models import AddResult, Job, JobQuery, JobState
from chalicelib.runtime import Runtime
from chalicelib.service import EnqueueRequest

# Long-polling: start with a short nap so fast jobs answer fast, back off to this.
_POLL_FIRST = 0.01
_POLL_MAX = 0.25


class Edge:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.settings = runtime.settings
        self.service = runtime.service
        self.keys = Keyring.parse(runtime.settings.api_keys)
        self.cache = ResultCache(runtime.settings.cache_size, runtime.settings.cache_ttl)
        self.metrics = runtime.metrics()
        self.metrics.attach_cache(self.cache)

    # -- helpers -----------------------------------------------------------
    def tenant(self, request: ApiRequest) -> str:
        return self.keys.tenant_for(request.header("x-api-key"))

    def _query(self, model: type[BaseModel], request: ApiRequest) -> Any:
        try:
            return model.model_validate(dict(request.query))
        except ValidationError as exc:
            raise errors.from_validation(exc, "query parameters are invalid") from exc

    def _job(self, job: Job) -> ApiResponse:
        return json_response(200, job_view(job))

    # -- routes --------------------------------------------------------------
    def enqueue(self, request: ApiRequest) -> ApiResponse:
        tenant = self.tenant(request)
        data = parse_json(request.body, self.settings.max_body_bytes)
        jobs, batch = self._enqueue_requests(data)
        results = self.service.enqueue(jobs, tenant)
        views = [self._enqueued(r, request.base_path) for r in results]
        created = any(r.created for r in results)
        status = 201 if created else 200
        if batch:
            return json_response(status, {"jobs": views})
        headers = {"Location": views[0]["status_url"]} if created else {}
        return json_response(status, views[0], headers)

    def _enqueue_requests(self, data: Any) -> tuple[list[EnqueueRequest], bool]:
        if not isinstance(data, dict):
            raise ValidationFailed('the body must be a JSON object: one job, or {"jobs": [...]}')
        if "jobs" not in data:
            job = _enqueue_request(data, ())
            _check_payload(self.runtime.registry, job, ())
            return [job], False
        items = data["jobs"]
        extra = sorted(set(data) - {"jobs"})
        if extra:
            raise ValidationFailed('a batch body holds only "jobs"', {"unexpected": extra})
        if not isinstance(items, list) or not items:
            raise ValidationFailed('"jobs" must be a non-empty list of jobs')
        limit = self.settings.max_batch
        if len(items) > limit:
            raise PayloadTooLarge(
                f"a batch holds at most {limit} jobs; this one has {len(items)}",
                {"limit": limit, "size": len(items)},
            )
        parsed: list[EnqueueRequest] = []
        problems: list[Any] = []
        for index, item in enumerate(items):
            try:
                job = _enqueue_request(item, ("jobs", index))
                _check_payload(self.runtime.registry, job, ("jobs", index))
                parsed.append(job)
            except ValidationFailed as exc:
                problems.append({"index": index, "message": exc.message, "details": exc.details})
        if problems:
            raise ValidationFailed("some jobs in the batch are invalid; none were stored", problems)
        return parsed, True

    def _enqueued(self, result: AddResult, base_path: str) -> dict[str, Any]:
        job = result.job
        return {
            "id": job.id,
            "state": job.state.value,
            "status_url": f"{base_path}/status/{job.id}",
            "created": result.created,
        }

    def status(self, request: ApiRequest, job_id: str) -> ApiResponse:
        tenant = self.tenant(request)
        wait = self._query(StatusQuery, request).wait
        cached = self.cache.get(tenant, job_id)
        if cached is not None:
            return ApiResponse(200, cached, {"Content-Type": "application/json", "X-Cache": "hit"})
        job = self.service.status(job_id, tenant)
        if wait > 0 and not job.terminal:
            job = self._wait_terminal(job, tenant, time.monotonic() + wait)
        body = dumps(job_view(job))
        if job.terminal:
            self.cache.put(tenant, job_id, body)
        return ApiResponse(200, body, {"Content-Type": "application/json", "X-Cache": "miss"})

    def _wait_terminal(self, job: Job, tenant: str, deadline: float) -> Job:
        """Poll the store until the job is terminal or the deadline passes.

        Polling, not the store notifier: the notifier announces new work, not
        finished work, and a short backoff costs one indexed read per nap.
        """
        nap = _POLL_FIRST
        while not job.terminal:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            time.sleep(min(nap, left))
            nap = min(nap * 2, _POLL_MAX)
            job = self.service.status(job.id, tenant)
        return job

    def list_jobs(self, request: ApiRequest) -> ApiResponse:
        tenant = self.tenant(request)
        q: ListQuery = self._query(ListQuery, request)
        return self._page(
            JobQuery(tenant, q.state, q.queue, q.type, limit=q.limit, cursor=q.cursor)
        )

    def dlq(self, request: ApiRequest) -> ApiResponse:
        tenant = self.tenant(request)
        q: DlqQuery = self._query(DlqQuery, request)
        return self._page(
            JobQuery(tenant, JobState.DEAD, q.queue, q.type, limit=q.limit, cursor=q.cursor)
        )

    def _page(self, query: JobQuery) -> ApiResponse:
        page = self.service.list_jobs(query)
        return json_response(
            200, {"jobs": [job_view(j) for j in page.jobs], "next_cursor": page.next_cursor}
        )

    def cancel(self, request: ApiRequest, job_id: str) -> ApiResponse:
        tenant = self.tenant(request)
        job = self.service.cancel(job_id, tenant)
        self.cache.drop(tenant, job_id)
        return self._job(job)

    def redrive(self, request: ApiRequest, job_id: str) -> ApiResponse:
        tenant = self.tenant(request)
        job = self.service.redrive(job_id, tenant)
        self.cache.drop(tenant, job_id)
        return self._job(job)

    def redrive_all(self, request: ApiRequest) -> ApiResponse:
        tenant = self.tenant(request)
        data = parse_json(request.body, self.settings.max_body_bytes, allow_empty=True)
        try:
            filters = RedriveAllRequest.model_validate(data if data is not None else {})
        except ValidationError as exc:
            raise errors.from_validation(exc) from exc
        moved = self.service.redrive_all(tenant, filters.queue, filters.type, filters.limit)
        for job in moved:
            self.cache.drop(tenant, job.id)
        return json_response(200, {"redriven": len(moved), "ids": [j.id for j in moved]})

    def health(self, request: ApiRequest) -> ApiResponse:
        # One cheap read proves the store answers; a down store makes this a 503.
        self.runtime.store.get("j_health_probe")
        return json_response(200, {"status": "ok", "store": "ok"})

    def metrics_text(self, request: ApiRequest) -> ApiResponse:
        if not self.settings.metrics_public:
            self.tenant(request)
        body = self.metrics.exposition().decode("utf-8")
        return ApiResponse(200, body, {"Content-Type": METRICS_CONTENT_TYPE})

    def openapi(self, request: ApiRequest) -> ApiResponse:
        self.tenant(request)
        from chalicelib.api.openapi import document

        return json_response(200, document(self.settings, self.runtime.registry))


def _enqueue_request(item: Any, loc: tuple[str | int, ...]) -> EnqueueRequest:
    if not isinstance(item, dict):
        raise ValidationFailed("a job must be a JSON object", {"loc": list(loc)})
    owned = sorted(SERVER_OWNED.intersection(item))
    if owned:
        raise ValidationFailed(
            "these fields are set by the server and cannot be sent: " + ", ".join(owned),
            {"fields": owned},
        )
    # Strict JSON validation: "5" is not a number here, exactly as /openapi.json says.
    try:
        return EnqueueRequest.model_validate_json(
            dumps(integral_floats(EnqueueRequest, item)), strict=True
        )
    except ValidationError as exc:
        raise ValidationFailed("the job is invalid", errors.validation_details(exc, loc)) from exc


def integral_floats(model: type[BaseModel], data: dict[str, Any]) -> dict[str, Any]:
    """JSON Schema counts 144.0 as an integer and pydantic's strict mode does not:
    turn integral floats into ints for the model's int fields, and nothing else."""
    out = dict(data)
    for name, field in model.model_fields.items():
        value = out.get(name)
        if (
            isinstance(value, float)
            and value.is_integer()
            and int in (field.annotation, *get_args(field.annotation))
        ):
            out[name] = int(value)
    return out


def _check_payload(registry: Registry, job: EnqueueRequest, loc: tuple[str | int, ...]) -> None:
    """Hold typed payloads to their JSON schema strictly too; the service then
    validates again (leniently) and normalizes, so this only ever refuses more."""
    spec = registry.get(job.type)
    if spec.payload_model is None:
        return
    try:
        spec.payload_model.model_validate_json(
            dumps(integral_floats(spec.payload_model, job.payload)), strict=True
        )
    except ValidationError as exc:
        raise ValidationFailed(
            f"payload does not match the {job.type!r} handler's model",
            {"type": job.type, "errors": errors.validation_details(exc, (*loc, "payload"))},
        ) from exc


# -- the process-wide edge ---------------------------------------------------

_edge: Edge | None = None
_edge_lock = threading.Lock()


def current() -> Edge:
    """The Edge for the current runtime, rebuilt if the runtime was replaced."""
    global _edge
    rt = runtime_module.current()
    edge = _edge
    if edge is not None and edge.runtime is rt:
        return edge
    with _edge_lock:
        if _edge is None or _edge.runtime is not rt:
            _edge = Edge(rt)
        return _edge


OPERATIONS: Mapping[str, Callable[..., ApiResponse]] = {
    "enqueue": Edge.enqueue,
    "status": Edge.status,
    "list_jobs": Edge.list_jobs,
    "dlq": Edge.dlq,
    "cancel": Edge.cancel,
    "redrive": Edge.redrive,
    "redrive_all": Edge.redrive_all,
    "health": Edge.health,
    "metrics": Edge.metrics_text,
    "openapi": Edge.openapi,
}


def handle(operation: str, request: ApiRequest, **params: str) -> ApiResponse:
    """Run one route; every failure becomes Spool's error shape, never a traceback."""
    try:
        return OPERATIONS[operation](current(), request, **params)
    except Exception as exc:
        return errors.from_exception(exc)

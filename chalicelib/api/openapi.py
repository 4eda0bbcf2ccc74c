"""/openapi.json, generated from the pydantic models and the handler registry.

It is meant to be true, and tests/test_openapi_schemathesis.py holds it to
that: every route, every status code each can answer, each job type with its
own payload schema, and the limits from the running settings.
"""

from __future__ import annotations

import copy
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from chalicelib import client_text
from chalicelib.api import query, schemas
from chalicelib.attempt_ceiling import attempts_ceiling
from chalicelib.config import Settings
from chalicelib.handlers import Registry
from chalicelib.models import JobState
from chalicelib.service import EnqueueRequest
from chalicelib.timebounds import MAX_DELAY_SECONDS

REF = "#/components/schemas/{model}"
_MODELS: list[type[BaseModel]] = [
    schemas.ErrorResponse,
    schemas.JobView,
    schemas.JobWithAttempts,
    schemas.JobWithWebhooks,
    schemas.EnqueueResult,
    schemas.BatchEnqueueResult,
    schemas.JobList,
    schemas.RedriveAllRequest,
    schemas.RedriveAllResult,
    schemas.Health,
]

# Every route answers this 400, public ones too, on both edges: `spool serve`'s server
# refuses such a header line, and app.py such an event (gateway_event.malformed_headers).
_CONTROL_400 = (
    "any header value holding a control character (C0 but the tab, or DEL), or a header "
    "name that is not letters, digits and !#$%&'*+-.^_`|~."
)
_ERRORS = {
    400: "Malformed JSON (NaN, Infinity and numbers too large for a float are not JSON), "
    "an invalid cursor or died_before, a query parameter given more than once, an "
    "X-API-Key (or Authorization) header given twice with different values, or " + _CONTROL_400,
    401: "Missing or wrong X-API-Key.",
    404: "No such job for this tenant (another tenant's job looks the same).",
    409: "The job is in a state where this makes no sense.",
    413: "Body over the size limit, or a batch over its job limit.",
    403: "A tenant's API key: /metrics needs an operator key (SPOOL_METRICS_KEYS).",
    422: "Well-formed but invalid: unknown job type, bad payload, server-owned fields; a "
    "query parameter the route does not take, empty, or a value it does not read (the "
    "message names the parameter).",
    429: "Too many long-polls (?wait) open at once, for this tenant or this process; "
    "retry after Retry-After seconds or poll without wait.",
    503: "The store is unavailable (store_unavailable), or a server setting is malformed "
    "(misconfigured); retry after Retry-After seconds.",
}
# Every route that asks for a key can answer this (chalicelib/api/throttle.py).
_SIGN_IN_429 = (
    "Too many failed authentications from this client address (rate_limited, "
    "SPOOL_AUTH_FAILURES): for Retry-After seconds it is answered this without its key "
    "being checked, unless that key has already signed in from this address."
)


def _ref(name: str) -> dict[str, str]:
    return {"$ref": REF.format(model=name)}


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


# Where a route's refusal means something more specific than _ERRORS says.
_ENQUEUE_ERRORS = {
    409: "An idempotency key this tenant already used names a job that differs from this "
    "request (type, payload, queue, priority, max_attempts, or the schedule while the job has "
    "not started; a delay compares as an offset from the job's creation, so the same delay "
    'sent again is the same request). details: {"id", "fields"} for one job; for a batch '
    '{"conflicts": [{"index", "id" or "same_key_as", "fields"}], "stored": [{"index", "id"}]}. '
    "Two jobs of one batch under one key that differ are refused before anything is stored. "
    "Otherwise a batch stores its keyed jobs first: on a conflict none of its jobs without a "
    "key is stored, and the keyed jobs that were are listed in details.stored, so sending "
    "the corrected batch again creates every job exactly once. The same request sent again "
    "answers 200 with created=false.",
    422: "Well-formed but invalid: unknown job type, bad payload, server-owned fields, a "
    f"run_at or delay more than {MAX_DELAY_SECONDS} s (366 days) ahead, or an idempotency_key "
    f"holding a control character or invisible text ({client_text.REFUSED_TEXT}; "
    "details[].type control_character, line_separator or format_character); a batch's "
    "details name each invalid job's index and nothing is "
    "stored.",
    413: "Body over the size limit, a batch over its job limit, a batch larger than "
    "the tenant's enqueue burst (SPOOL_TENANT_LIMITS; details.burst): split it, or a "
    "payload over 2 MiB as the answers that return it carry it (details.index names "
    "a batch's job); nothing is stored.",
    429: "Over the tenant's enqueue rate (a token bucket, SPOOL_TENANT_LIMITS rate/burst) or "
    "its backlog of waiting jobs: nothing was stored (rate_limited); retry after "
    "Retry-After seconds.",
}

# A redrive puts dead jobs back to work: the tenant's limits hold it as they hold an
# enqueue (chalicelib/api/throttle.py redrive_room, redrive_charge).
_REDRIVE_NOTES = {
    413: "A body over the size limit: a redrive of one job takes none.",
    429: "Over the tenant's enqueue rate (a redrive takes a token a job; a bulk one moves "
    "at most the burst) or its backlog of waiting jobs: nothing was moved (rate_limited); "
    "retry after Retry-After seconds.",
}


def _error(status: int, description: str | None = None) -> dict[str, Any]:
    response: dict[str, Any] = {
        "description": description or _ERRORS[status],
        "content": _json(_ref("ErrorResponse")),
    }
    if status == 401:
        response["headers"] = {"WWW-Authenticate": {"schema": {"type": "string"}, "required": True}}
    if status in (429, 503):
        response["headers"] = {"Retry-After": {"schema": {"type": "string"}, "required": True}}
    return response


def _operation(
    summary: str,
    ok: dict[int, dict[str, Any]],
    errors: tuple[int, ...],
    *,
    public: bool = False,
    parameters: list[dict[str, Any]] | None = None,
    body: dict[str, Any] | None = None,
    notes: dict[int, str] | None = None,
) -> dict[str, Any]:
    responses: dict[str, Any] = {str(code): r for code, r in ok.items()}
    for code in dict.fromkeys((*errors, *(() if public else (400, 401, 429)), 503)):
        description = (notes or {}).get(code)
        if code == 429 and not public:
            own = description or (_ERRORS[429] if 429 in errors else None)
            description = f"{own} Or: {_SIGN_IN_429}" if own else _SIGN_IN_429
        responses[str(code)] = _error(code, description)
    if "400" not in responses:  # a public route's only 400
        responses["400"] = _error(400, _CONTROL_400[0].upper() + _CONTROL_400[1:])
    operation: dict[str, Any] = {"summary": summary, "responses": dict(sorted(responses.items()))}
    if public:
        operation["security"] = []
    if parameters:
        operation["parameters"] = parameters
    if body is not None:
        operation["requestBody"] = body
    return operation


def _ok(schema: dict[str, Any], description: str = "OK", **extra: Any) -> dict[str, Any]:
    return {"description": description, "content": _json(schema), **extra}


def _query_parameters(model: type[BaseModel]) -> list[dict[str, Any]]:
    """Each field of a query model as a parameter; query strings cannot carry null."""
    params = []
    for name, prop in model.model_json_schema()["properties"].items():
        schema = {k: v for k, v in prop.items() if k not in ("title", "default", "description")}
        if "anyOf" in schema:
            options = [o for o in schema.pop("anyOf") if o.get("type") != "null"]
            schema.update(options[0] if len(options) == 1 else {"anyOf": options})
        if "$ref" in schema:
            schema = {"type": "string", "enum": [s.value for s in JobState]}
        param: dict[str, Any] = {"name": name, "in": "query", "required": False, "schema": schema}
        if "description" in prop:
            param["description"] = prop["description"]
        if schema.get("type") == "boolean":  # chalicelib/api/query.py reads no other spelling
            spelled = f"Spelled {query.BOOLEAN_SPELLINGS}."
            param["description"] = f"{param.get('description', '')} {spelled}".strip()
        params.append(param)
    return params


_ID = {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}


def _job_variants(
    registry: Registry, base: dict[str, Any], defs: dict[str, Any], ceiling: int
) -> list[Any]:
    """EnqueueRequest once per job type, its payload replaced by the handler's model
    and its max_attempts bounded as this server bounds it for the type (the operator's
    ceiling, or the handler's own default when higher: attempt_ceiling)."""
    variants = []
    for spec in registry.specs():
        variant = copy.deepcopy(base)
        variant["title"] = f"Enqueue {spec.type}"
        variant.pop("description", None)
        variant["properties"]["type"] = {"type": "string", "const": spec.type}
        for branch in variant["properties"]["max_attempts"]["anyOf"]:
            if branch.get("type") == "integer":
                branch["maximum"] = max(ceiling, spec.retry.max_attempts)
        if spec.payload_model is not None:
            payload = spec.payload_model.model_json_schema(ref_template=REF)
            defs.update(payload.pop("$defs", {}))
            variant["properties"]["payload"] = payload
            if payload.get("required"):  # the default {} would not do
                variant["required"] = [*variant.get("required", []), "payload"]
        # delay and run_at are alternatives: both set (non-null) is refused.
        variant["not"] = {
            "required": ["delay", "run_at"],
            "properties": {"delay": {"type": "number"}, "run_at": {"type": "string"}},
        }
        variants.append(variant)
    return variants


def document(settings: Settings, registry: Registry) -> dict[str, Any]:
    _, top = models_json_schema([(m, "serialization") for m in _MODELS], ref_template=REF)
    defs: dict[str, Any] = dict(top.get("$defs", {}))
    base = EnqueueRequest.model_json_schema(ref_template=REF)
    defs.update(base.pop("$defs", {}))
    ceiling = attempts_ceiling(settings)
    defs["EnqueueJob"] = {"oneOf": _job_variants(registry, base, defs, ceiling)}
    defs["BatchEnqueueRequest"] = {
        "type": "object",
        "additionalProperties": False,
        "required": ["jobs"],
        "properties": {
            "jobs": {
                "type": "array",
                "minItems": 1,
                "maxItems": settings.max_batch,
                "items": _ref("EnqueueJob"),
            }
        },
    }
    enqueued = {"anyOf": [_ref("EnqueueResult"), _ref("BatchEnqueueResult")]}
    job = _ok(_ref("JobView"))
    job_list = _ok(_ref("JobList"))
    paths: dict[str, Any] = {
        "/enqueue": {
            "post": _operation(
                f"Add one job, or a batch of up to {settings.max_batch}; an invalid job stores "
                "none of them (for a reused idempotency key see 409)",
                {
                    200: _ok(enqueued, "Every idempotency key was already seen: existing jobs."),
                    201: _ok(enqueued, "At least one job was created."),
                },
                (400, 409, 413, 422, 429),
                body={
                    "required": True,
                    "content": _json({"anyOf": [_ref("EnqueueJob"), _ref("BatchEnqueueRequest")]}),
                },
                notes=_ENQUEUE_ERRORS,
            )
        },
        "/status/{id}": {
            "get": _operation(
                "A job's state, attempts, result or last error; with attempts=true also "
                "its recorded attempts (when, which worker, how each ended, tracebacks); "
                "with webhooks=true its completion webhooks and their delivery state",
                {
                    200: _ok(
                        {
                            "anyOf": [
                                _ref("JobView"),
                                _ref("JobWithAttempts"),
                                _ref("JobWithWebhooks"),
                            ]
                        },
                        headers={
                            "X-Cache": {
                                "description": "hit when answered from the result cache",
                                "required": True,
                                "schema": {"type": "string", "enum": ["hit", "miss"]},
                            }
                        },
                    )
                },
                (400, 404, 422, 429),
                parameters=[_ID, *_query_parameters(schemas.StatusQuery)],
            )
        },
        "/jobs": {
            "get": _operation(
                "List this tenant's jobs, oldest first",
                {200: job_list},
                (400, 422),
                parameters=_query_parameters(schemas.ListQuery),
            )
        },
        "/jobs/{id}/cancel": {
            "post": _operation(
                "Cancel a waiting job (no body, or {})",
                {200: job},
                (400, 404, 409, 413, 422),
                parameters=[_ID],
            )
        },
        "/dlq": {
            "get": _operation(
                "List dead jobs",
                {200: job_list},
                (400, 422),
                parameters=_query_parameters(schemas.DlqQuery),
            )
        },
        "/dlq/{id}/redrive": {
            "post": _operation(
                "Move a dead job back to queued (no body, or {})",
                {200: job},
                (400, 404, 409, 413, 422, 429),
                parameters=[_ID],
                notes=_REDRIVE_NOTES,
            )
        },
        "/dlq/redrive": {
            "post": _operation(
                "Redrive dead jobs (optionally one queue or type) that died before a bound",
                {200: _ok(_ref("RedriveAllResult"))},
                (400, 413, 422, 429),
                notes={429: _REDRIVE_NOTES[429]},
                body={"required": False, "content": _json(_ref("RedriveAllRequest"))},
            )
        },
        "/health": {
            "get": _operation(
                "Liveness, with one read from the store",
                {200: _ok(_ref("Health"))},
                (),
                public=True,
            )
        },
        "/metrics": {
            "get": _operation(
                "Prometheus exposition",
                {
                    200: {
                        "description": "Prometheus text format 0.0.4",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    }
                },
                () if settings.metrics_public else (403,),
                public=settings.metrics_public,
            )
        },
        "/openapi.json": {
            "get": _operation(
                "This document",
                {200: _ok({"type": "object"})},
                (),
            )
        },
    }
    from chalicelib.api import ui_openapi  # the dashboard's routes

    paths.update(ui_openapi.paths(_operation, _json, _query_parameters, _ID))
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Spool",
            "version": "0.1.0",
            "description": "A job queue with a result cache. Errors are "
            '{"error": {"code", "message", "details"}}.',
        },
        "paths": paths,
        "components": {
            "schemas": dict(sorted(defs.items())),
            "securitySchemes": {"ApiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"}},
        },
        "security": [{"ApiKey": []}],
    }

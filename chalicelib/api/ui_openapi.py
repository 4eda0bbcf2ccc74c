"""The dashboard's routes in /openapi.json (chalicelib/api/openapi.py adds these paths).

The JSON routes are documented like the rest of the API, so the schemathesis
test drives them with valid and invalid input too; the page and its static
files are public and answer HTML, JavaScript or CSS.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from chalicelib.api.ui_routes import ACTION_IDS_MAX, JOB_ID, JobsQuery
from chalicelib.service import NAME_PATTERN

_NAME = {"type": "string", "pattern": NAME_PATTERN}
_OBJECT = {"type": "object"}
# Exactly one form: these ids, or every dead job (of a queue and/or type).
DEAD_ACTION = {
    "oneOf": [
        {
            "type": "object",
            "additionalProperties": False,
            "required": ["ids"],
            "properties": {
                "ids": {
                    "type": "array",
                    "minItems": 1,
                    "maxItems": ACTION_IDS_MAX,
                    "items": {"type": "string", "pattern": JOB_ID},
                },
                "all": {"type": "boolean", "const": False},
            },
        },
        {
            "type": "object",
            "additionalProperties": False,
            "required": ["all"],
            "properties": {
                "all": {"type": "boolean", "const": True},
                "queue": _NAME,
                "type": _NAME,
                "max": {
                    "type": "integer",
                    "minimum": 1,
                    "description": "act on at most this many (what the confirmation said)",
                },
            },
        },
    ]
}
DEAD_RESULT = {
    "type": "object",
    "required": ["done", "ids", "more"],
    "properties": {
        "done": {"type": "integer"},
        "ids": {"type": "array", "items": {"type": "string"}},
        "more": {"type": "boolean", "description": "more remain: send the same request again"},
    },
}


def paths(
    operation: Callable[..., dict[str, Any]],
    json_: Callable[[dict[str, Any]], dict[str, Any]],
    query_parameters: Callable[[Any], list[dict[str, Any]]],
    id_parameter: dict[str, Any],
) -> dict[str, Any]:
    def ok(schema: dict[str, Any], description: str = "OK") -> dict[str, Any]:
        return {"description": description, "content": json_(schema)}

    def text(kind: str) -> dict[str, Any]:
        return {"description": "OK", "content": {kind: {"schema": {"type": "string"}}}}

    name = {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}
    action_body = {"required": True, "content": json_(DEAD_ACTION)}
    return {
        "/ui": {
            "get": operation(
                "The dashboard page (no data; it asks for a key)",
                {
                    200: text("text/html"),
                    308: {
                        "description": "Asked as /ui/: sent to /ui (the page's URLs are relative)"
                    },
                },
                (),
                public=True,
            )
        },
        "/ui/static/{name}": {
            "get": operation(
                "The dashboard's script (app.js) and stylesheet (app.css)",
                {
                    200: {
                        "description": "OK",
                        "content": {
                            "text/javascript": {"schema": {"type": "string"}},
                            "text/css": {"schema": {"type": "string"}},
                        },
                    }
                },
                (404,),
                public=True,
                parameters=[name],
            )
        },
        "/ui/api/overview": {
            "get": operation(
                "This tenant's queues by state, oldest due job, live workers, last hour per minute",
                {200: ok(_OBJECT)},
                (),
            )
        },
        "/ui/api/jobs": {
            "get": operation(
                "This tenant's jobs, newest first, filtered; find= an id or idempotency key",
                {200: ok(_OBJECT)},
                (400, 422),
                parameters=query_parameters(JobsQuery),
            )
        },
        "/ui/api/jobs/{id}": {
            "get": operation(
                "One job with its payload and result (secrets masked) and its attempts",
                {200: ok(_OBJECT)},
                (404,),
                parameters=[id_parameter],
            )
        },
        "/ui/api/jobs/{id}/cancel": {
            "post": operation(
                "Cancel a waiting job", {200: ok(_OBJECT)}, (404, 409), parameters=[id_parameter]
            )
        },
        "/ui/api/jobs/{id}/redrive": {
            "post": operation(
                "Redrive a dead job", {200: ok(_OBJECT)}, (404, 409), parameters=[id_parameter]
            )
        },
        "/ui/api/dead/redrive": {
            "post": operation(
                "Redrive dead jobs: these ids, or all (a queue's, a type's)",
                {200: ok(DEAD_RESULT)},
                (400, 413, 422),
                body=action_body,
            )
        },
        "/ui/api/dead/purge": {
            "post": operation(
                "Delete dead jobs for good: these ids, or all (a queue's, a type's)",
                {200: ok(DEAD_RESULT)},
                (400, 413, 422),
                body=action_body,
            )
        },
        "/ui/api/schedules": {
            "get": operation(
                "Periodic schedules, next run, last jobs (the system tenant's keys; others: none)",
                {200: ok(_OBJECT)},
                (),
            )
        },
    }

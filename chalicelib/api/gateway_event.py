"""Whether a Lambda event is an API Gateway REST proxy event app.py's routes can read.

Chalice reads the event without looking: a key missing raised out of the handler (a
Lambda error, which API Gateway turns into a 502), a body that is not text or a
path parameter missing crashed the view (a 500), a query value that is not a list
was read letter by letter. API Gateway never sends such an event, but a direct
invocation can (the console's test event, another function, a hand-made
integration): app.py answers it 400 with what is wrong.

Two checks, so that a well-formed request pays only for the first: `shape_problem`
(types and presence of the event's parts, before chalice reads it: nothing is stored
for an event it refuses) and `value_problem` (the names and values inside headers,
query and path parameters, a walk of some twenty headers), asked only when the
answer was a 500 or chalice raised: a bad value there fails before any store write
(the key, the query and the Content-Type are all read first).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

PREFIX = "not an API Gateway REST proxy event: "
# The keys chalice's Request reads with event[...]: each must be present, maybe null.
_REQUIRED = ("headers", "multiValueQueryStringParameters", "pathParameters", "stageVariables")
_MISSING: Any = object()


def shape_problem(event: Any, routes: Mapping[str, Mapping[str, Any]]) -> str | None:
    """What makes `event` unreadable as a proxy event for one of `routes` (chalice's
    route table: resource path, then method, then its RouteEntry), or None: the
    checks that take the same few steps whatever the event holds."""
    if not isinstance(event, dict):
        return PREFIX + "the event is not a JSON object"
    context = event.get("requestContext")
    if not isinstance(context, dict):
        return PREFIX + "it has no requestContext object"
    resource, method = context.get("resourcePath"), context.get("httpMethod")
    if not isinstance(resource, str) or not isinstance(method, str):
        return PREFIX + "requestContext.resourcePath or requestContext.httpMethod is not a string"
    identity = context.get("identity")
    if identity is not None and not isinstance(identity, dict):
        return PREFIX + "requestContext.identity is not an object"
    for name in _REQUIRED:
        part = event.get(name, _MISSING)
        if part is not None and not isinstance(part, dict):
            if part is _MISSING:
                return PREFIX + f"it has no {name} (null when empty)"
            return PREFIX + f"{name} is not an object"
    many = event.get("multiValueHeaders")
    if many is not None and not isinstance(many, dict):
        return PREFIX + "multiValueHeaders is not an object"
    if "body" not in event:
        return PREFIX + "it has no body (null when empty)"
    body = event["body"]
    if body is not None and not isinstance(body, (str, bytes)):
        return PREFIX + f"body is {type(body).__name__}, not a string or null"
    if type(event.get("isBase64Encoded", False)) is not bool:
        return PREFIX + "isBase64Encoded is not true or false"
    entries = routes.get(resource)
    if entries is None:  # chalice answered 405 with an empty Allow
        return PREFIX + f"requestContext.resourcePath {resource[:200]!r} is no route of this API"
    entry = entries.get(method)
    if entry is not None and entry.view_args:
        params = event["pathParameters"] or {}
        for name in entry.view_args:
            if not isinstance(params.get(name), str):
                return PREFIX + f"pathParameters has no {name!r} string, which {resource} takes"
    return None


def _strings(given: dict[Any, Any]) -> bool:
    return all(isinstance(k, str) and isinstance(v, str) for k, v in given.items())


def _lists(given: dict[Any, Any]) -> bool:
    return all(
        isinstance(k, str) and isinstance(v, list) and v and all(isinstance(e, str) for e in v)
        for k, v in given.items()
    )


def value_problem(event: dict[str, Any]) -> str | None:
    """What inside an event shape_problem passed chalice or the routes cannot read
    (a header that is not a string, a query value that is not a list of them), or None."""
    for name, fits, wanted in (
        ("headers", _strings, "strings"),
        ("pathParameters", _strings, "strings"),
        ("multiValueHeaders", _lists, "lists of strings"),
        ("multiValueQueryStringParameters", _lists, "lists of strings"),
    ):
        part = event.get(name)
        if part and not fits(part):
            return PREFIX + f"{name} does not map names to {wanted}"
    return None

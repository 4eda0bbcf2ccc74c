"""Whether a Lambda event is an API Gateway REST proxy event app.py's routes can read.

Chalice reads the event without looking: a key missing raised out of the handler (a
Lambda error, which API Gateway turns into a 502), a body that is not text or a
path parameter missing crashed the view (a 500), a query value that is not a list
was read letter by letter. API Gateway never sends such an event, but a direct
invocation can (the console's test event, another function, a hand-made
integration, an HTTP API sending payload format 2.0): app.py answers it 400 with
what is wrong, before chalice or a route reads any of it.

Two checks, both run on every event before chalice reads it: `shape_problem` (types
and presence of the event's parts: a few steps whatever the event holds) and
`value_problem` (the names and values inside headers, query and path parameters).
multiValueHeaders, which chalice never reads, is checked by the one walk that reads
it: `repeated_headers`, which app.py's _handle runs before a route sees the request.
The second once ran only after a request had failed, so a header or query value that
was not a string reached the routes first: it raised there (an ERROR line with a
traceback for a client's mistake, then the 400), or was stored with the job. It
walks each part in C (str.join), no Python step per header: about 36,000
instructions for an event of twenty headers, against some 500,000 for the request
(docs/benchmarks.md, stop 43).
"""

from __future__ import annotations

from collections.abc import Mapping
from itertools import chain
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
        if event.get("version") == "2.0":
            return PREFIX + (
                "it is an HTTP API event (payload format 2.0); this function takes REST API "
                "proxy events (format 1.0)"
            )
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
    path = event.get("path")
    if path is not None and not isinstance(path, str):  # the base path of links is cut from it
        return PREFIX + "path is not a string"
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


_LIST = frozenset({list})


def _strings(given: dict[Any, Any]) -> bool:
    """Whether every value is a str. Only the values: Lambda hands the function JSON,
    whose names are always strings. str.join walks them in C, no frame per header."""
    try:
        "".join(given.values())
    except TypeError:
        return False
    return True


def _lists(given: dict[Any, Any]) -> bool:
    """Whether every value is a non-empty list of strs."""
    values = given.values()
    if not all(values) or not set(map(type, values)) <= _LIST:
        return False
    try:
        "".join(chain.from_iterable(values))
    except TypeError:
        return False
    return True


def value_problem(event: dict[str, Any]) -> str | None:
    """What inside an event shape_problem passed chalice or the routes cannot read
    (a header that is not a string, a query value that is not a list of them), or None.
    Not multiValueHeaders: repeated_headers checks them as it reads them."""
    for name, fits, wanted in (
        ("headers", _strings, "strings"),
        ("pathParameters", _strings, "strings"),
        ("multiValueQueryStringParameters", _lists, "non-empty lists of strings"),
    ):
        part = event.get(name)
        if part and not fits(part):
            return PREFIX + f"{name} does not map names to {wanted}"
    return None


class BadEvent(ValueError):
    """An event part found unreadable while it is read (its message says what)."""


_NOT_REPEATED: frozenset[str] = frozenset()
_KEY = "x-api-key"
_BAD_MANY = PREFIX + "multiValueHeaders does not map names to non-empty lists of strings"


def repeated_headers(event: dict[str, Any], headers: Any) -> tuple[frozenset[str], Any]:
    """Header names (lower-case) the event gives different values, and the headers the
    route is to read; BadEvent when multiValueHeaders is not a map of names to
    non-empty lists of strings (the one walk of them both checks and reads).

    API Gateway puts the last of a header's values in `headers` and all of them in
    multiValueHeaders; for the key, which picks the tenant, `headers` is compared too
    (an event whose two disagree names two keys) and a value holding commas is that
    many keys, as `spool serve` reads one (its server cannot tell one line "a, b" from
    two lines): one key given more than once is taken as once, different keys are
    refused.

    `headers` is never changed: it is chalice's own dict, which the request (and a
    middleware reading it) keeps. Where a key line names several keys, a copy whose
    key is the last of them (the one `spool serve` reads) is returned instead."""
    given = event.get("multiValueHeaders")
    key = headers.get(_KEY)
    if not given and (key is None or "," not in key):
        return _NOT_REPEATED, headers
    values: dict[str, set[str]] = {}
    keys: set[str] = set()
    for name, each in (given or {}).items():
        if type(each) is not list or not each:
            raise BadEvent(_BAD_MANY)
        try:
            "".join(each)  # every value a str, checked in C
        except TypeError:
            raise BadEvent(_BAD_MANY) from None
        lower = str(name).lower()
        if lower == _KEY:
            for value in each:
                keys.update(_keys(value))
        else:
            values.setdefault(lower, set()).update(each)
    if key is not None:
        parts = _keys(key)
        keys.update(parts)
        if len(parts) > 1 and isinstance(headers, dict):
            headers = {**headers, _KEY: parts[-1]}  # the one `spool serve` reads
    values[_KEY] = keys
    return frozenset(name for name, seen in values.items() if len(seen) > 1), headers


def _keys(value: str) -> list[str]:
    """The keys one X-API-Key value names: several when it holds commas."""
    return [part.strip() for part in value.split(",")] if "," in value else [value]

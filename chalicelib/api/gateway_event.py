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

A third runs on an event the two passed, still before chalice reads it:
`malformed_headers`, whether a value in `headers` holds a control character or a
name is no HTTP token, which app.py answers 400 in the words `spool serve`'s server
uses for such a line; repeated_headers's walk refuses either in multiValueHeaders
(InvalidHeader), before a route reads a header.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from itertools import chain
from typing import Any

from chalicelib.api.http import CONTROL

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


# What header values may hold (RFC 9110 5.5): every character but the control ones,
# C0 but the tab and DEL. Tabs and spaces, C1 controls and other latin-1 bytes
# (obs-text), and in an event any character past U+00FF (UTF-8 text, which `spool
# serve`'s server takes as bytes) are a value HTTP carries. Matched whole, the allowed
# characters: a third fewer instructions than searching for a control one.
_VALUES = re.compile(r"[\t\x20-\x7e\x80-\U0010ffff]*")


# What a header name is (RFC 9110 5.1, 5.6.2): a token, one or more of these. A space,
# a colon, a separator such as `(` `@` `/`, a control character or a letter past
# ASCII is none; `spool serve`'s server refuses the line ("Invalid header").
_NAMES = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")


def malformed_headers(event: dict[str, Any]) -> bool:
    """Whether the event's `headers` (the ones chalice reads) hold a line `spool serve`'s
    server refuses, 400, before app.py sees the request: a value holding a control
    character (_VALUES) or a name that is no token (_NAMES; the empty name too). An
    event can carry either (CR and LF, a colon in a name too): a bad value was served,
    or read as a wrong key or a Content-Encoding that str.strip() made `identity`
    (stop 47); a bad name was served, its job stored (stop 48). multiValueHeaders,
    where API Gateway keeps a repeated header's every line, are checked in the one
    walk of them, repeated_headers (InvalidHeader).

    Run after value_problem: `headers` maps names to strings. Two str.joins and two
    regex matches, in C, no Python step per header (bench/lambda_event_checks.py)."""
    headers = event.get("headers")
    if not headers:
        return False
    return (
        _VALUES.fullmatch("".join(headers.values())) is None
        or _NAMES.fullmatch("".join(headers)) is None
        or "" in headers
    )


def control_in_path(event: dict[str, Any]) -> str | None:
    """The path (decoded) of an event whose path parameters hold a control character,
    or None: `spool serve` answers such a path 404 no route before a route reads it,
    where the route looked the id up (`job not found`, stop 49). The path is the
    resource with the parameters put in, as API Gateway decoded them. Run after
    value_problem: pathParameters maps names to strings; one str.join and one search."""
    params = event.get("pathParameters")
    if not params or CONTROL.search("".join(params.values())) is None:
        return None
    path: str = event["requestContext"]["resourcePath"]
    for name, value in params.items():
        path = path.replace("{" + name + "}", value)
    return path


class BadEvent(ValueError):
    """An event part found unreadable while it is read (its message says what)."""


class InvalidHeader(ValueError):
    """A header in multiValueHeaders holds a control character in its value, or its
    name is no token: what malformed_headers finds in `headers`, found while
    repeated_headers walks them."""


_NOT_REPEATED: frozenset[str] = frozenset()
_KEY = "x-api-key"
# Headers whose value cannot hold a comma of its own (outside a quoted string), so a
# line holding one names that many values. `spool serve`'s server joins a header given
# on two lines into one line "a, b" and cannot tell it from one line: read the same way
# here, both edges answer it alike (tests/test_lambda_vs_served.py). Authorization
# too (every route reads a Bearer key when no X-API-Key came): sent twice, it was one
# wrong token under `spool serve` (401) and two values on Lambda (200 or 400, stop 49).
LISTED = (_KEY, "content-type", "authorization")
# One credential of an Authorization line: a scheme, blanks, a token (RFC 9110 11.4).
_CREDENTIAL = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+[ \t]+[^ \t,]+")
_BAD_MANY = PREFIX + "multiValueHeaders does not map names to non-empty lists of strings"


def repeated_headers(event: dict[str, Any], headers: Any) -> tuple[frozenset[str], Any]:
    """Header names (lower-case) the event gives different values, and the headers the
    route is to read; BadEvent when multiValueHeaders is not a map of names to
    non-empty lists of strings, InvalidHeader when a value there holds a control
    character or a name is no token (the one walk of them both checks and reads).

    API Gateway puts the last of a header's values in `headers` and all of them in
    multiValueHeaders; for a LISTED header (the key, which picks the tenant, and the
    Content-Type, which says how to read the body) `headers` is compared too (an event
    whose two disagree names two values) and a value holding commas is that many
    values, as `spool serve` reads one: one value given more than once is taken as
    once, different values are refused when the route reads the header.

    Any other header given on several lines is read as `spool serve` reads it: its
    lines joined with ", " (its server's reading), so that `Content-Encoding: identity`
    twice is `identity, identity` on both edges (Spool takes no such coding), where on
    Lambda it was one `identity` and the job stored (stop 49).

    `headers` is never changed: it is chalice's own dict, which the request (and a
    middleware reading it) keeps. Where a LISTED line names several values, a copy
    holding the last of them (the one `spool serve` reads) is returned instead, and
    one holding the joined lines of any other header given on several."""
    given: dict[Any, Any] = event.get("multiValueHeaders") or {}
    lines = [(name, headers.get(name)) for name in LISTED]
    if not given and not any(line is not None and "," in line for _, line in lines):
        return _NOT_REPEATED, headers
    values: dict[str, set[str]] = {}
    walked: list[str] = []
    joined: dict[str, list[str]] = {}
    for name, each in given.items():
        if type(each) is not list or not each:
            raise BadEvent(_BAD_MANY)
        try:
            walked.append("".join(each))  # every value a str, checked in C
        except TypeError:
            raise BadEvent(_BAD_MANY) from None
        lower = str(name).lower()
        seen = values.setdefault(lower, set())
        if lower in LISTED:
            for value in each:
                seen.update(listed_values(lower, value))
        else:
            joined.setdefault(lower, []).extend(each)
    if walked and (
        _VALUES.fullmatch("".join(walked)) is None
        or _NAMES.fullmatch("".join(map(str, given))) is None
        or "" in given
    ):
        # A header's earlier line, or a name, which API Gateway leaves out of `headers`.
        raise InvalidHeader
    for name, line in lines:
        if line is None:
            continue
        parts = listed_values(name, line)
        values.setdefault(name, set()).update(parts)
        if len(parts) > 1 and isinstance(headers, dict):
            headers = {**headers, name: parts[-1]}  # the one `spool serve` reads
    for name, each in joined.items():
        if len(each) < 2:
            continue
        if isinstance(headers, dict):
            headers = {**headers, name: ", ".join(each)}  # as `spool serve`'s server joins them
        elif len(set(each)) > 1:
            values[name] = set(each)  # no copy to give: refused when a route reads it
    return frozenset(name for name, seen in values.items() if len(seen) > 1), headers


def listed_values(name: str, value: str) -> list[str]:
    """The values one line of a LISTED header names: several when it holds commas (a
    Content-Type's only outside a quoted parameter, so a line with a quote is one; an
    Authorization's only when each part is a whole credential, so AWS's
    `AWS4-HMAC-SHA256 Credential=..., SignedHeaders=..., Signature=...` is one)."""
    if "," not in value or (name != _KEY and '"' in value):
        return [value]
    if name == "authorization":
        parts = [part.strip(" \t") for part in value.split(",")]
        return parts if all(_CREDENTIAL.fullmatch(part) for part in parts) else [value]
    return [part.strip() for part in value.split(",")]

"""The neutral request and response that cross between app.py and chalicelib.api.

Bodies are parsed here rather than by Chalice, so that every malformed or
oversized body gets Spool's own error shape, whatever its content type.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import unquote

from chalicelib.errors import BadRequest, PayloadTooLarge, ValidationFailed
from chalicelib.json_encode import compact_encoder
from chalicelib.json_values import DEFAULT_MAX_BODY_VALUES, too_many_values, values_over
from chalicelib.jsonstrict import (
    NESTED_TOO_DEEP,
    StrictRefusal,
    finite_or_null,
    is_finite_json,
    is_utf8,
    loads_strict,
    refused_path,
)

JSON_TYPE = "application/json"
# On every answer unless its route sets its own: answers hold payloads, results and
# keys' tenants, and the key rides in X-API-Key, which a shared cache does not take
# for a credential as it takes Authorization; nor may a browser read JSON as a page.
API_HEADERS = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}
log = logging.getLogger("spool.api")


def single_values(query: Mapping[str, str]) -> dict[str, str]:
    """The query string as one value per name; a name given twice is refused.

    Chalice keeps every value of a repeated parameter (a MultiDict) and dict() would
    keep the last one silently, so "?state=dead&state=queued" would list queued jobs:
    the client asked two things and got one answer without being told."""
    getlist = getattr(query, "getlist", None)
    if getlist is not None:
        repeated = sorted(k for k in query if len(getlist(k)) > 1)
        if repeated:
            raise BadRequest(
                f"give each query parameter once; repeated: {', '.join(repeated)[:200]}",
                {"repeated": [k[:64] for k in repeated[:20]]},
            )
    values = dict(query)
    for name, value in values.items():
        if _unreadable(name) or _unreadable(value):
            # Bytes that were not UTF-8: `spool serve` reads them as lone surrogates (as
            # a Lambda event's JSON can spell them), API Gateway and `chalice local` as
            # U+FFFD. Each is refused alike, and the name shown as every edge can show
            # it: with U+FFFD for what it could not read.
            readable = _SURROGATES.sub(REPLACEMENT, name[:64])
            shown = readable.encode("ascii", "backslashreplace").decode("ascii")
            raise BadRequest(
                f"query parameter {shown!r} is not UTF-8: percent-encode UTF-8 bytes",
                {"parameter": shown},
            )
    return values


# U+FFFD, the character API Gateway's event and `chalice local` put in a query for
# bytes that are not UTF-8 (`spool serve` keeps them as lone surrogates). No query
# parameter Spool takes holds it (states, names, numbers, cursors and job ids are
# ASCII), so it is read as those bytes: `?state=%FF` is the same 400 on every edge,
# where it was a 422 on two of them and `?find=%FF` a search for U+FFFD (stop 49).
REPLACEMENT = "\ufffd"
_SURROGATES = re.compile("[\ud800-\udfff]")


def _unreadable(text: str) -> bool:
    """Whether a query name or value stands for bytes that were not UTF-8."""
    return REPLACEMENT in text or not is_utf8(text)


# What `spool serve` answers (400) to a header line waitress cannot parse, a value
# holding a control character among them (local/http_messages.py says it too), and
# app.py to an event whose header value holds one (gateway_event.malformed_headers),
# before any route reads a header.
INVALID_HEADER = (
    "a header line is not `Name: value`: the name is letters, digits and "
    "!#$%&'*+-.^_`|~ with no space before the colon, and the value holds no "
    "control character"
)
# The other refusals of a request head `spool serve`'s server (local/http_guard.py,
# local/http_messages.py) and `chalice local`'s (chalicelib/chalice_local_http.py)
# make: one text each, here, as chalicelib ships to Lambda and local/ does not (stop
# 48: each edge kept a copy, and a test compared two of them).
FOLDED_HEADER = (
    "a header line starts with a space or tab (line folding, obsolete since RFC 7230): "
    "send each header on one line"
)
INVALID_LENGTH = (
    "Content-Length must be given once, as the body's size in bytes in plain digits (such as 42)"
)
LENGTH_AND_CHUNKED = "a request may carry Content-Length or Transfer-Encoding: chunked, not both"
# A request target (path or query string) holding raw bytes past ASCII: waitress's
# "Bad URI", which `spool serve` explains so (local/http_messages.py); chalice local's
# server read them as latin-1, and `?find=café` searched for "cafÃ©" (stop 49).
NON_ASCII_TARGET = (
    "the request target (path or query string) holds bytes that are not ASCII: "
    "percent-encode them as UTF-8 (é is %C3%A9; curl -G --data-urlencode does it)"
)
# A request line that is not three words, the last an HTTP version: waitress's "Start
# line is invalid", explained so, and chalice local's server's 400s on the line.
INVALID_START_LINE = (
    "the request line must be `METHOD /path HTTP/1.1`: a space or control "
    "character in the path or query string must be percent-encoded (a space is %20)"
)


def method_not_upper(method: str) -> str:
    """The 400's words for a method not in upper case (`get`), on both local servers."""
    return (
        f"the method {method!r} is not upper case: HTTP methods are case-sensitive; "
        f"send {method.upper()!r} (Spool's routes take GET, HEAD and POST)"
    )


def body_too_large(size: int, limit: int) -> str:
    """The 413's words for a body of `size` bytes over `limit`, on every edge."""
    return f"request body is {size} bytes; the limit is {limit}"


# The request line and headers together (SPOOL_HTTP_MAX_HEADER_BYTES), for `spool
# serve` (local/http_limits.py) and `chalice local` (chalicelib/chalice_local_http.py).
MAX_HEADER_BYTES = 16 * 1024
MAX_HEADER_BYTES_RANGE = (1024, 1 << 20)


def max_header_bytes(settings: Any) -> int:
    """SPOOL_HTTP_MAX_HEADER_BYTES as both local servers read it (a config.Settings);
    ValueError naming the variable when it is malformed."""
    low, high = MAX_HEADER_BYTES_RANGE
    limit: int = settings.integer(
        "SPOOL_HTTP_MAX_HEADER_BYTES", MAX_HEADER_BYTES, minimum=low, maximum=high
    )
    return limit


def head_too_large(limit: int) -> str:
    """The 431's words for a request line and headers over `limit` bytes together
    (SPOOL_HTTP_MAX_HEADER_BYTES), under `spool serve` and `chalice local`: a long URL
    (a path id, a query string) counts too, and is what a client most often sent."""
    return (
        f"the request line and headers are over {limit} bytes together: "
        "shorten the URL (its path and query string) or the headers"
    )


# A path no route matched: its answer echoes at most this many characters of it.
MAX_SHOWN_PATH = 200
# Why a path holding a control character is no route (`spool serve`, app.py on Lambda).
CONTROL_IN_PATH = ": a path holds no control character"
CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def no_route(method: str, shown: str, why: str = "") -> str:
    """The 404's words for a path no route matched (`shown`: the client's path, as
    shown), at most MAX_SHOWN_PATH characters of it, not all 16 KiB."""
    if len(shown) > MAX_SHOWN_PATH:
        shown = f"{shown[:MAX_SHOWN_PATH]}...({len(shown)} chars)"
    return f"no route for {method} {shown}{why}"


def shown_path(path: str) -> str:
    """A path as a no-route answer shows it: control characters escaped (`\\x00`)."""
    return path.encode("unicode_escape").decode("ascii")


def under_ui(target: str) -> bool:
    """Whether a request target is the dashboard's as the routers read it: leading
    slashes are one and escapes are decoded, so `//ui/api/dead/purge` and `/%75i/...`
    are the dashboard's purge. Read as sent, their refusals (a 413) lacked its headers."""
    path = unquote(target.partition("?")[0], errors="replace")
    return ("/" + path.lstrip("/")).startswith("/ui")


def with_ui_headers(path: str, headers: Mapping[str, Any]) -> dict[str, Any]:
    """Under /ui, what every other dashboard answer carries (its CSP and framing rules)
    besides `headers`: for the answers made before a dashboard route runs (refusals, no
    route), on every edge. Elsewhere `headers` as given. ui_routes is imported only
    for such a path."""
    if not under_ui(path):
        return dict(headers)
    from chalicelib.api.ui_routes import ERROR_HEADERS

    return {**ERROR_HEADERS, **headers}


# `spool serve` and `chalice local` set this header to the socket's peer address
# (overwriting any a client sent) and PEER_HEADER_TRUSTED to True; anywhere else the
# header is ignored.
PEER_HEADER = "x-spool-peer"
PEER_HEADER_TRUSTED = False


@dataclass(frozen=True, init=False)
class ApiRequest:
    """What a route needs from the request; header names are matched lower-case."""

    headers: Mapping[str, str] = field(default_factory=dict)
    query: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""
    base_path: str = ""  # the API Gateway stage prefix ("/api"), so links work behind it
    client: str = ""  # the caller's address (API Gateway's sourceIp), for sign-in throttling
    # Why the body could not be read at all (an event marked isBase64Encoded whose
    # body is not base64): a route that reads the body answers 400 with it.
    body_error: str | None = None
    # Headers (lower-case) the event carried more than once with different values.
    # API Gateway keeps the last in `headers`; a proxy that reads the first would
    # see another key or type than Spool does, so reading one is refused.
    repeated: frozenset[str] = frozenset()
    # The query string read into the route's parameters (routes.QUERIES), once,
    # before the route runs; None until then, and on routes that ignore it.
    params: Any = None

    def __init__(
        self,
        headers: Mapping[str, str] | None = None,
        query: Mapping[str, str] | None = None,
        body: bytes = b"",
        base_path: str = "",
        client: str = "",
        body_error: str | None = None,
        repeated: frozenset[str] = frozenset(),
        params: Any = None,
    ) -> None:
        """The fields set straight into the instance's dict: a frozen dataclass's own
        __init__ sets each through object.__setattr__, about 12k instructions a
        request for these eight (docs/benchmarks.md, stop 40). None for headers or
        query is a new empty dict, as their default factories give."""
        fields = self.__dict__
        fields["headers"] = {} if headers is None else headers
        fields["query"] = {} if query is None else query
        fields["body"] = body
        fields["base_path"] = base_path
        fields["client"] = client
        fields["body_error"] = body_error
        fields["repeated"] = repeated
        fields["params"] = params

    def with_params(self, params: Any) -> ApiRequest:
        """This request with its query read into `params`: what dataclasses.replace
        gives, every field carried, without its per-field walk (about a tenth of a
        cached status request's route). Its fields are copied as they are: a frozen
        request's values are never changed in place."""
        request = object.__new__(ApiRequest)
        fields = request.__dict__
        fields.update(self.__dict__)
        fields["params"] = params
        return request

    def header(self, name: str) -> str | None:
        name = name.lower()
        if name in self.repeated:
            raise BadRequest(
                f"the {name} header is given more than once, with different values: send it once",
                {"header": name},
            )
        value = self.headers.get(name)
        if value is None:
            return None
        # Blanks around a field's value are no part of it (RFC 9110 5.5). `spool serve`'s
        # waitress drops them; an API Gateway event may keep them, and a key sent as
        # "key " was refused there (401) and taken by `spool serve`.
        return value.strip(" \t")

    def json(
        self,
        max_bytes: int,
        *,
        allow_empty: bool = False,
        max_values: int = DEFAULT_MAX_BODY_VALUES,
    ) -> Any:
        """The body as JSON (parse_json), its Content-Encoding checked."""
        if self.body_error is not None:
            raise BadRequest(self.body_error)
        return parse_json(
            self.body,
            max_bytes,
            allow_empty=allow_empty,
            max_values=max_values,
            encoding=self.header("content-encoding"),
            charset=other_charset(self.header("content-type")),
            media_type=self.header("content-type"),
        )

    def no_body(self, max_bytes: int) -> None:
        """Refuse any body but none or `{}`, for a route that acts on its path alone.

        Ignored, a body was no refusal: garbage, an option the route does not have, or
        a job meant for /enqueue cancelled or redrove the job with 200, and the client
        took its mistake for success. Checked before the job is touched."""
        data = self.json(max_bytes, allow_empty=True)
        if self.body.strip() and data != {}:
            raise ValidationFailed("this route takes no body: send none, or {}")


@dataclass
class ApiResponse:
    status: int
    body: str
    headers: dict[str, str] = field(default_factory=dict)


def _default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


# JSONEncoder(separators=(",", ":"), default=_default, allow_nan=False).encode, without
# its Python frames (chalicelib/json_encode.py).
_strict = compact_encoder(_default, allow_nan=False)


def dumps(data: Any) -> str:
    """Strict JSON for every response: NaN and Infinity are never written.

    Nothing non-finite is stored any more (requests, payloads and results are all
    checked), but a row written before that rule may still hold one: it is sent
    as null, as JavaScript's JSON.stringify would, rather than failing the request.
    """
    try:
        return _strict(data)
    except ValueError:
        if is_finite_json(data):
            raise  # some other fault: not ours to paper over
        log.warning("a response held NaN or Infinity (a row stored before they were refused)")
        return _strict(finite_or_null(data))


def json_response(status: int, data: Any, headers: dict[str, str] | None = None) -> ApiResponse:
    return ApiResponse(status, dumps(data), {"Content-Type": JSON_TYPE, **(headers or {})})


UTF8_NAMES = frozenset({"utf-8", "utf8"})


def other_charset(content_type: str | None) -> str | None:
    """The charset a Content-Type declares when it is not UTF-8 (the first such), else
    None. Any media type is taken (Spool reads every body as JSON); only the charset
    can make the same bytes mean other text."""
    for param in (content_type or "").split(";")[1:]:
        name, _, value = param.partition("=")
        if name.strip().lower() == "charset":
            charset = value.strip().strip('"').strip().lower()
            if charset and charset not in UTF8_NAMES:  # an empty one declares nothing
                return charset[:40]
    return None


def parse_json(
    body: bytes,
    max_bytes: int,
    *,
    allow_empty: bool = False,
    encoding: str | None = None,
    charset: str | None = None,
    media_type: str | None = None,
    max_values: int = DEFAULT_MAX_BODY_VALUES,
) -> Any:
    """Decode a request body: 413 past the limit, 400 when it is not JSON.

    413 too for a body of more than `max_values` values, before it is parsed: as Python
    objects, small values take up to 30 times their text (chalicelib/json_values.py).

    NaN, Infinity and numbers too large for a float (1e999) are not JSON: stored,
    they would hand every other client a body its parser rejects. `charset` is a
    declared charset other than UTF-8 (other_charset): a body that is not ASCII under
    it is refused, as read as UTF-8 it may be valid and yet other text than was sent.
    `media_type`: the Content-Type, named in the refusal of a body that is form data.
    """
    if len(body) > max_bytes:
        raise PayloadTooLarge(
            body_too_large(len(body), max_bytes),
            {"limit": max_bytes, "size": len(body)},
        )
    if encoding is not None and encoding.strip().lower() not in ("", "identity"):
        # Read as it is, a compressed body fails as "not UTF-8"; one merely labelled
        # compressed would be taken. Neither is what the client meant.
        raise BadRequest(
            f"Content-Encoding {encoding.strip()!r} is not supported: send the body "
            "uncompressed, without that header",
            {"header": "Content-Encoding"},
        )
    if not body.strip():
        if allow_empty:
            return None
        raise BadRequest("request body is empty; send a JSON object")
    if charset is not None and not body.isascii():
        # Latin-1's "CafÃ©" is UTF-8's "Café": read as UTF-8 it was stored as text the
        # client never sent. ASCII reads the same under any charset, so it is taken.
        shown = charset.encode("ascii", "backslashreplace").decode("ascii")
        raise BadRequest(
            f"the body is declared charset={shown}, but JSON is read as UTF-8 only: "
            "send it encoded as UTF-8 (charset=utf-8, or no charset)",
            {"header": "Content-Type"},
        )
    if values_over(body, max_values):
        raise PayloadTooLarge(too_many_values(max_values), {"limit_values": max_values})
    try:
        # UTF-8, strictly (RFC 8259 8.1). Given bytes, json.loads guesses UTF-16 or -32
        # and lets UTF-8-encoded surrogates through, so a name spelled twice (once as
        # a surrogate pair's bytes) passed the repeated-name check and one was dropped.
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadRequest(
            "request body is not UTF-8: send JSON encoded as UTF-8",
            {"reason": f"byte {exc.start} ({body[exc.start : exc.start + 1]!r}) {exc.reason}"},
        ) from exc
    try:
        return loads_strict(text)
    except (ValueError, RecursionError) as exc:
        reason = _why_not_json(exc)
        # A BOM is the trouble whatever the type (curl -d @file.json labels it form data).
        hint = BOM_HINT if reason == BOM_REASON else _form_hint(media_type)
        details: dict[str, Any] = {"reason": reason}
        # A refused token's column is where its text first appears, not always the
        # one refused: the path says which value it is (as a 422's loc does).
        place = refused_path(text) if _refused_token(exc) else None
        if place is not None:
            details["loc"] = place
        raise BadRequest("request body is not valid JSON" + hint, details) from exc


def _refused_token(exc: Exception) -> bool:
    """A token strict JSON refuses, or an integer too long to convert: json.loads
    reads the text otherwise, so refused_path can find it."""
    return isinstance(exc, StrictRefusal) or "integer string conversion" in str(exc)


FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")


def _form_hint(media_type: str | None) -> str:
    """What to do when the body that is not JSON was sent as form data: `curl -d
    type=echo` (application/x-www-form-urlencoded) or `curl -F` (multipart/form-data).
    The parser's reason alone ("Expecting value: line 1 column 1") never said so. JSON
    under those types is taken (curl -d labels every body so): only the body counts."""
    named = (media_type or "").split(";")[0].strip().lower()
    if named not in FORM_TYPES:
        return ""
    return (
        f": it was sent as form data (Content-Type: {named}); send a JSON object, "
        """e.g. curl -d '{"type": "echo"}' -H 'Content-Type: application/json'"""
    )


BOM_REASON = (
    "the body starts with a byte order mark (BOM: the bytes EF BB BF), which JSON "
    "sent over a network must not have (RFC 8259 8.1): send it without one (a file "
    'saved as "UTF-8 with BOM": save it as plain UTF-8)'
)


BOM_HINT = ": it starts with a byte order mark; save the file as plain UTF-8 and send it again"


def _why_not_json(exc: Exception) -> str:
    """The parser's reason, in the client's terms (not Python's settings to change)."""
    if isinstance(exc, RecursionError):
        return NESTED_TOO_DEEP
    if "integer string conversion" in str(exc):
        return f"a number has more than {sys.get_int_max_str_digits()} digits"
    if str(exc).startswith("Unexpected UTF-8 BOM"):
        # json's words ("decode using utf-8-sig") advise the server's code; the client
        # sent a file saved "UTF-8 with BOM" (Notepad, PowerShell) and can resave it.
        return BOM_REASON
    return str(exc)[:200]

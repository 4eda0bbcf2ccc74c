"""`http_request`: offload a slow or flaky API call, guarded against SSRF.

The request goes out through http.client on a socket the handler opens itself,
to an address chalicelib.ssrf has checked: the name is resolved once, and that
answer is the one connected to (TLS still verifies the certificate against the
name). Redirects are followed here, one hop at a time, each through the guard.
No proxy settings from the environment apply.

Settings: SPOOL_HTTP_ALLOWLIST (names, *.suffixes, IPs and CIDRs; empty means
nothing is reachable), SPOOL_HTTP_ALLOW_PRIVATE (reach loopback, private and
CGNAT addresses of allowlisted hosts), SPOOL_HTTP_PORTS (ports URLs may name; by
default 80, 443 and 1024-65535), SPOOL_HTTP_CA_FILE (extra CA bundle).
"""

from __future__ import annotations

import base64
import binascii
import codecs
import dataclasses
import email.utils
import functools
import http.client
import io
import json
import logging
import re
import socket
import ssl
import threading
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal, cast
from urllib.parse import urljoin

from pydantic import BaseModel, ConfigDict, Field, JsonValue, field_validator, model_validator

from chalicelib import logs, ssrf
from chalicelib.config import Settings
from chalicelib.errors import Misconfigured, PermanentError, RetryAfter
from chalicelib.handlers import JobContext, handler
from chalicelib.ports import WEB_PORTS, PortSet

if TYPE_CHECKING:
    pass

log = logging.getLogger("spool.handlers.http_request")
HTTP_PORTS = "SPOOL_HTTP_PORTS"

MAX_TIMEOUT = 50.0
MAX_BODY_CAP = 128 * 1024
MAX_RETRY_AFTER = 3600.0
REDIRECTS = frozenset({301, 302, 303, 307, 308})
DEFAULT_RESPONSE_HEADERS = (
    "content-type",
    "content-length",
    "content-encoding",
    "content-language",
    "cache-control",
    "etag",
    "last-modified",
    "expires",
    "date",
    "location",
    "retry-after",
    "x-request-id",
)
# Framing and routing headers belong to the connection this handler makes.
FORBIDDEN_REQUEST_HEADERS = frozenset(
    {
        "host",
        "content-length",
        "transfer-encoding",
        "connection",
        "keep-alive",
        "upgrade",
        "te",
        "trailer",
        "expect",
        "proxy-authorization",
        "proxy-connection",
    }
)
# Headers that describe a request body (Fetch's "request-body-header names"): they
# follow the body on a 307/308 and go with it when a redirect turns into a GET.
BODY_HEADERS = frozenset(
    {"content-type", "content-encoding", "content-language", "content-location"}
)
DEFAULT_USER_AGENT = "spool-http_request/1"
_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,100}$")
READ_CHUNK = 16 * 1024
# The worker refuses a result over 256 KiB once encoded (chalicelib.worker.MAX_RESULT_BYTES);
# results are kept under this, with room to spare.
RESULT_BUDGET = 240 * 1024
MAX_HEADER_JSON = 8 * 1024  # one response header's value, encoded
MAX_HEADERS_JSON = 32 * 1024  # all of them
MAX_REASON_JSON = 1024
# Python codecs that are no charset a server may name: punycode's decoder is quadratic
# (a 128 KiB body held an attempt ~4 s), and the escape codecs turn the bytes into
# other text ("\\u0041" read as "A"). A body in one of them is returned as base64.
NOT_CHARSETS = frozenset({"punycode", "idna", "unicode-escape", "raw-unicode-escape"})


class HttpRequestPayload(BaseModel):
    """One outbound request. The URL's shape is checked by the model; the admit
    hook checks, at enqueue, what can be decided without DNS (allowlist match, IP
    literals); the addresses are decided at run time, against the worker's
    settings and a fresh DNS answer."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    method: Literal["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"] = "GET"
    url: str = Field(min_length=1, max_length=ssrf.MAX_URL_LENGTH)
    headers: dict[str, str] = Field(default_factory=dict, max_length=50)
    body: str | None = Field(default=None, max_length=128 * 1024)
    body_base64: str | None = Field(default=None, max_length=180 * 1024)
    json_body: JsonValue = Field(default=None, alias="json")
    timeout: float = Field(default=20.0, gt=0, le=MAX_TIMEOUT)
    follow_redirects: bool = True
    max_redirects: int = Field(default=5, ge=0, le=10)
    max_body_bytes: int = Field(default=64 * 1024, ge=0, le=MAX_BODY_CAP)
    response_headers: list[str] | None = Field(default=None, max_length=50)
    retry_on_status: list[int] = Field(default_factory=lambda: [429, 502, 503, 504])

    @field_validator("method", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    @field_validator("url")
    @classmethod
    def _shape(cls, value: str) -> str:
        try:
            ssrf.parse_url(value)
        except ssrf.Refused as exc:
            raise ValueError(str(exc)) from None
        return value

    @field_validator("headers")
    @classmethod
    def _headers(cls, value: dict[str, str]) -> dict[str, str]:
        for name, text in value.items():
            if not _TOKEN.fullmatch(name):
                raise ValueError(f"invalid header name {name!r}")
            if name.lower() in FORBIDDEN_REQUEST_HEADERS:
                raise ValueError(f"header {name!r} is set by the handler, not the payload")
            if len(text) > 8192:
                raise ValueError(f"header {name!r} is longer than 8192 characters")
            bad = _unsendable(text)
            if bad is not None:
                raise ValueError(
                    f"header {name!r} holds {bad}, which a header value cannot carry "
                    "(visible characters, spaces, tabs and Latin-1 letters only)"
                )
        return value

    @field_validator("response_headers")
    @classmethod
    def _names(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and not all(_TOKEN.fullmatch(n) for n in value):
            raise ValueError("response_headers must be header names")
        return value

    @field_validator("retry_on_status")
    @classmethod
    def _statuses(cls, value: list[int]) -> list[int]:
        if not all(400 <= s <= 599 for s in value):
            raise ValueError("retry_on_status holds 4xx/5xx status codes only")
        return value

    @model_validator(mode="after")
    def _one_body(self) -> HttpRequestPayload:
        given = [self.body is not None, self.body_base64 is not None, self.json_body is not None]
        if sum(given) > 1:
            raise ValueError("give at most one of body, body_base64 and json")
        if self.body_base64 is not None:
            try:
                base64.b64decode(self.body_base64, validate=True)
            except (binascii.Error, ValueError):
                raise ValueError("body_base64 is not valid base64") from None
        return self

    def encoded_body(self) -> tuple[bytes | None, str | None]:
        """The bytes to send and the content type to default to."""
        if self.body is not None:
            return self.body.encode(), "text/plain; charset=utf-8"
        if self.body_base64 is not None:
            return base64.b64decode(self.body_base64), "application/octet-stream"
        if self.json_body is not None:
            return json.dumps(self.json_body).encode(), "application/json"
        return None, None


def _unsendable(text: str) -> str | None:
    """The first character of a header value that cannot go on the wire, as an escape.

    RFC 9110 allows visible ASCII, space, tab and obs-text (bytes 0x80-0xFF, which
    http.client writes as Latin-1) in a field value: a control character went out raw
    to the target, and one beyond U+00FF made every attempt die in http.client's
    Latin-1 encoding, after connecting, until the job was dead."""
    found = _UNSENDABLE.search(text)
    return None if found is None else f"U+{ord(found.group()):04X}"


_UNSENDABLE = re.compile(r"[^\t\x20-\x7e\x80-\xff]")


class RetryableStatus(Exception):
    """The server answered a status the payload asked to retry on."""


def admit(payload: HttpRequestPayload, tenant: str) -> None:
    """Refuse at enqueue (422) a job the SSRF guard could never let out: the
    allowlist is empty, the host can never match it, or the URL is an IP literal
    the guard refuses. Settings are the API's, which Chalice stages share with
    the worker; names are still resolved and checked at run time."""
    try:
        policy, _ = policy_from(Settings.from_env())
    except PermanentError as exc:  # a setting no payload can mend: the server's to fix
        raise Misconfigured.setting(exc) from None
    try:
        ssrf.check_static(payload.url, policy)
    except ssrf.Refused as exc:
        raise ValueError(str(exc)) from None


def policy_from(settings: Settings) -> tuple[ssrf.Policy, str | None]:
    from chalicelib.builtin.setting_values import ca_file, named

    try:
        allow_private = settings.flag("SPOOL_HTTP_ALLOW_PRIVATE")
        policy = named(
            ssrf.HTTP_ALLOWLIST,
            lambda _: ssrf.Policy.parse(settings.items(ssrf.HTTP_ALLOWLIST), allow_private),
            "",
        )
        ports_text = settings.text(HTTP_PORTS) or WEB_PORTS
        ports = named(HTTP_PORTS, PortSet.parse, ports_text)
        bundle = named("SPOOL_HTTP_CA_FILE", ca_file, settings.text("SPOOL_HTTP_CA_FILE"))
    except ValueError as exc:
        raise PermanentError(f"http_request is misconfigured: {exc}") from None
    # A `*.suffix` or CIDR entry opens every port of the hosts it holds: ports apart.
    return dataclasses.replace(policy, ports=ports, ports_setting=HTTP_PORTS), bundle


# -- connections pinned to a checked address, bounded by the request's deadline --
def open_socket(ip: ssrf.IPAddress, port: int, timeout: float) -> socket.socket:
    """The only place this handler connects; tests swap the socket layer under it."""
    return socket.create_connection((str(ip), port), timeout=timeout)


class _DeadlineResponse(http.client.HTTPResponse):
    def __init__(
        self,
        sock: socket.socket,
        debuglevel: int = 0,
        method: str | None = None,
        url: str | None = None,
        *,
        deadline: float,
    ) -> None:
        super().__init__(sock, debuglevel, method, url)
        self.fp.close()  # the plain makefile() reader; the socket stays open
        # Imported here: enqueueing (the API) loads this module for its payload model only.
        from chalicelib.builtin.socket_reads import DeadlineReader

        self._reader = DeadlineReader(sock, functools.partial(_remaining, deadline))
        self.fp = io.BufferedReader(self._reader)

    def begin(self) -> None:
        """http.client takes the end of the stream for the end of the headers: a peer
        that closed after "HTTP/1.1 200 OK\\r\\nContent-Le" (crashed mid-answer) was
        a 200, and a webhook so answered counted as delivered. The blank line that
        ends the headers is read without meeting the end of the stream, so meeting
        it here means they never ended."""
        super().begin()
        if self._reader.ended:
            raise ConnectionError("the connection closed inside the response's headers")


def _bounded(deadline: float) -> type[http.client.HTTPResponse]:
    # http.client builds its response as `self.response_class(sock, method=...)`,
    # so any callable with that signature serves; this one carries the deadline.
    return cast(
        type[http.client.HTTPResponse], functools.partial(_DeadlineResponse, deadline=deadline)
    )


class _PinnedHTTP(http.client.HTTPConnection):
    def __init__(self, target: ssrf.Target, ip: ssrf.IPAddress, deadline: float) -> None:
        super().__init__(target.host, target.port, timeout=_remaining(deadline))
        self._ip = ip
        self._deadline = deadline
        self.response_class = _bounded(deadline)

    def connect(self) -> None:
        self.sock = open_socket(self._ip, self.port, _remaining(self._deadline))


class _PinnedHTTPS(http.client.HTTPSConnection):
    def __init__(
        self,
        target: ssrf.Target,
        ip: ssrf.IPAddress,
        deadline: float,
        context: ssl.SSLContext,
    ) -> None:
        super().__init__(target.host, target.port, timeout=_remaining(deadline), context=context)
        self._ip = ip
        self._deadline = deadline
        self._tls = context
        self.response_class = _bounded(deadline)

    def connect(self) -> None:
        raw = open_socket(self._ip, self.port, _remaining(self._deadline))
        try:
            # With a timeout set, CPython bounds the whole handshake by it, not each read.
            raw.settimeout(_remaining(self._deadline))
            self.sock = self._tls.wrap_socket(raw, server_hostname=self.host)
        except BaseException:
            raw.close()
            raise


def _tls_context(ca_file: str | None, ca_setting: str) -> ssl.SSLContext:
    """The TLS context, with the extra CA bundle `ca_setting` names loaded: the error
    names that setting, as webhooks (SPOOL_WEBHOOK_CA_FILE) share this client."""
    context = ssl.create_default_context()
    if ca_file:
        try:
            context.load_verify_locations(cafile=ca_file)
        except (OSError, ssl.SSLError) as exc:
            raise PermanentError(f"{ca_setting} cannot be loaded: {exc}") from None
    return context


# -- one request, redirects included ----------------------------------------
def perform(
    payload: HttpRequestPayload,
    policy: ssrf.Policy,
    ctx: JobContext | None = None,
    ca_file: str | None = None,
    resolver: ssrf.Resolver = ssrf.system_resolver,
    *,
    read_body: bool = True,
    ca_setting: str = "SPOOL_HTTP_CA_FILE",
) -> dict[str, Any]:
    """One request through the guard, redirects followed as the payload says.

    read_body=False (webhook deliveries) answers with the status and headers alone:
    the body is not read at all, so a receiver that answers 200 and then sends its
    body slowly, endlessly or never cannot turn a delivery it took into a timeout."""
    deadline = time.monotonic() + payload.timeout
    if ctx is not None:
        deadline = min(deadline, ctx.deadline)
    method = payload.method
    body, default_type = payload.encoded_body()
    headers = dict(payload.headers)
    if body is not None and default_type and not _has(headers, "content-type"):
        headers["Content-Type"] = default_type
    if not _has(headers, "user-agent"):
        headers["User-Agent"] = DEFAULT_USER_AGENT
    url = payload.url
    visited: list[str] = []
    context: ssl.SSLContext | None = None
    first_origin: tuple[str, str, int] | None = None
    while True:
        target, addresses = ssrf.check_url(url, policy, _by_deadline(resolver, deadline))
        first_origin = first_origin or target.origin
        if target.scheme == "https" and context is None:
            context = _tls_context(ca_file, ca_setting)
        visited.append(target.url)
        conn, response = _send(target, addresses, method, headers, body, deadline, context)
        try:
            location = response.getheader("Location")
            if payload.follow_redirects and response.status in REDIRECTS and location:
                if len(visited) > payload.max_redirects:
                    raise PermanentError(f"more than {payload.max_redirects} redirects")
                url = urljoin(target.url, location)
                if response.status == 303 or (
                    response.status in (301, 302) and method not in ("GET", "HEAD")
                ):
                    method = "GET" if method != "HEAD" else "HEAD"
                    body = None
                    headers = {k: v for k, v in headers.items() if k.lower() not in BODY_HEADERS}
                if _origin_of(url) != first_origin:
                    headers = _cross_origin_headers(headers, body is not None)
                continue
            data, truncated = b"", False
            if read_body:
                data, truncated = _read_capped(response, payload.max_body_bytes, deadline, ctx)
            result = _result(payload, target, visited, response, data, truncated)
        finally:
            conn.close()
        if response.status in payload.retry_on_status:
            _retry_for(response, result)
        return result


def _by_deadline(resolver: ssrf.Resolver, deadline: float) -> ssrf.Resolver:
    """The resolver, waited for only until the request's deadline.

    The URL's name is the enqueuer's choice, and so are its DNS servers: one that never
    answers held getaddrinfo (which takes no timeout) for as long as the system resolver
    kept asking, past the payload's timeout and SPOOL_WEBHOOK_TIMEOUT. The lookup runs
    on a thread of its own; past the deadline the request ends (TimeoutError: retried)
    and the lookup's eventual answer goes to no one."""

    def lookup(host: str, port: int) -> list[str]:
        answer: list[Sequence[str]] = []
        failure: list[BaseException] = []
        done = threading.Event()

        def run() -> None:
            try:
                answer.append(resolver(host, port))
            except BaseException as exc:  # handed to the caller, who decides
                failure.append(exc)
            finally:
                done.set()

        logs.inherited_thread(run, name="spool-dns").start()  # the job's, as its lines
        left = deadline - time.monotonic()
        if not done.wait(max(left, 0.0)):
            raise TimeoutError(f"http_request ran out of time looking up {host!r} in DNS")
        if failure:
            raise failure[0]
        return list(answer[0])

    return lookup


def _cross_origin_headers(headers: Mapping[str, str], with_body: bool) -> dict[str, str]:
    """What may follow a redirect to another origin: none of the caller's headers
    (Authorization, Cookie, X-Api-Key and any other custom one may carry a secret
    meant for the first origin), only the body's description when the body
    follows (307/308), and the handler's own User-Agent. Once dropped they stay
    dropped, even if a later hop returns to the first origin."""
    kept = {k: v for k, v in headers.items() if with_body and k.lower() in BODY_HEADERS}
    kept["User-Agent"] = DEFAULT_USER_AGENT
    return kept


def _origin_of(url: str) -> tuple[str, str, int] | None:
    try:
        return ssrf.parse_url(url).origin
    except ssrf.Refused:
        return None  # the guard refuses it on the next hop anyway


def _has(headers: Mapping[str, str], name: str) -> bool:
    return any(k.lower() == name for k in headers)


def _remaining(deadline: float) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError("http_request ran out of time")
    return left


def _send(
    target: ssrf.Target,
    addresses: list[ssrf.IPAddress],
    method: str,
    headers: Mapping[str, str],
    body: bytes | None,
    deadline: float,
    context: ssl.SSLContext | None,
) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
    """Try each checked address in turn; only connection failures move to the next."""
    last: OSError | None = None
    for ip in addresses:
        conn: http.client.HTTPConnection
        if target.scheme == "https":
            assert context is not None
            conn = _PinnedHTTPS(target, ip, deadline, context)
        else:
            conn = _PinnedHTTP(target, ip, deadline)
        try:
            conn.connect()
        except ssl.SSLCertVerificationError as exc:
            conn.close()
            raise PermanentError(f"TLS certificate check failed for {target.host}: {exc}") from exc
        except OSError as exc:
            conn.close()
            last = exc
            continue
        try:
            if conn.sock is not None:
                conn.sock.settimeout(_remaining(deadline))  # sendall: one bound for all of it
            conn.request(method, target.path, body=body, headers=dict(headers))
            return conn, conn.getresponse()  # status line and headers: read by the deadline
        except BaseException:
            conn.close()
            raise
    assert last is not None
    raise ConnectionError(f"could not connect to {target.host}:{target.port}: {last}") from last


def _read_capped(
    response: http.client.HTTPResponse,
    cap: int,
    deadline: float,
    ctx: JobContext | None,
) -> tuple[bytes, bool]:
    """Read at most cap bytes (plus one, to know it was cut), within the deadline
    (every recv under the response is bounded by it, see DeadlineReader)."""
    chunks: list[bytes] = []
    size = 0
    while size <= cap:
        if ctx is not None and ctx.cancelled.is_set():
            raise TimeoutError("attempt abandoned by the worker")
        _remaining(deadline)
        chunk = response.read(min(READ_CHUNK, cap + 1 - size))
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    data = b"".join(chunks)
    return data[:cap], len(data) > cap


def _result(
    payload: HttpRequestPayload,
    target: ssrf.Target,
    visited: list[str],
    response: http.client.HTTPResponse,
    data: bytes,
    truncated: bool,
) -> dict[str, Any]:
    """The result, always small enough for the worker to store.

    The worker refuses a result over 256 KiB once JSON-encoded (ASCII only, so
    every non-ASCII or control character of the body costs up to 6 bytes, 12
    outside the BMP), which made the job dead: header values are bounded first,
    then the body is cut, at a character boundary, until the whole fits."""
    wanted = {n.lower() for n in (payload.response_headers or DEFAULT_RESPONSE_HEADERS)}
    charset = response.headers.get_content_charset() or "utf-8"
    text, used = _decode(data, charset, complete=not truncated)
    result: dict[str, Any] = {
        "status": response.status,
        "reason": _cut(response.reason or "", MAX_REASON_JSON),
        "url": target.url,
        "redirects": visited[:-1],
        "headers": _kept_headers(response.getheaders(), wanted),
        "body": text if text is not None else base64.b64encode(data).decode(),
        "body_encoding": "text" if text is not None else "base64",
        "body_bytes": used if text is not None else len(data),
        "truncated": truncated or (text is not None and used < len(data)),
    }
    size = _json_size(result)
    if size <= RESULT_BUDGET:
        return result
    # Room for the body once everything else is counted (the cut only shortens
    # body_bytes, and "true" is shorter than "false").
    room = RESULT_BUDGET - (size - _json_size(result["body"]))
    if room < 2:
        raise PermanentError(
            f"the response's headers and redirect chain alone exceed the {RESULT_BUDGET}-byte"
            " result limit"
        )
    if text is not None:
        kept, used = _text_within(data, charset, room)
        result["body"], result["body_bytes"] = kept, used
    else:
        keep = (room - 2) // 4 * 3
        result["body"], result["body_bytes"] = base64.b64encode(data[:keep]).decode(), keep
    result["truncated"] = True
    return result


def _json_size(value: Any) -> int:
    """Bytes as the worker encodes results (json.JSONEncoder defaults: ASCII only)."""
    return len(json.dumps(value, allow_nan=False))


def _decode(data: bytes, charset: str, complete: bool) -> tuple[str | None, int]:
    """The body as text and how many of its bytes that text holds; None when it is
    not text in its charset. A body cut short may end inside a character: that
    partial character is left out rather than turning the whole body to base64."""
    try:
        if codecs.lookup(charset).name in NOT_CHARSETS:
            return None, len(data)
        b"".decode(charset)  # LookupError for a name that is not a text encoding (rot13, hex)
        decoder = codecs.getincrementaldecoder(charset)("strict")
        text = decoder.decode(data, final=complete)
        pending = decoder.getstate()[0]
    except (LookupError, ValueError, TypeError):  # UnicodeDecodeError is a ValueError
        return None, len(data)
    # A codec holding back more than a character's worth (UTF-7's base64 runs) is
    # not one to cut inside: the body goes as base64.
    if not isinstance(text, str) or not isinstance(pending, bytes) or len(pending) > 8:
        return None, len(data)
    return text, len(data) - len(pending)


def _text_within(data: bytes, charset: str, room: int) -> tuple[str, int]:
    """The longest prefix of the (decodable) body whose JSON string fits in room."""
    low, high = 0, len(data)
    best = ("", 0)
    while low <= high:
        middle = (low + high) // 2
        text, used = _decode(data[:middle], charset, complete=False)
        if text is not None and _json_size(text) <= room:
            best = (text, used)
            low = middle + 1
        else:
            high = middle - 1
    return best


def _cut(value: str, limit: int) -> str:
    """The longest prefix of value whose JSON string takes at most limit bytes."""
    if _json_size(value) <= limit:
        return value
    low, high = 0, len(value)
    while low < high:
        middle = (low + high + 1) // 2
        if _json_size(value[:middle]) <= limit:
            low = middle
        else:
            high = middle - 1
    return value[:low]


def _kept_headers(received: list[tuple[str, str]], wanted: set[str]) -> dict[str, str]:
    """The wanted response headers, repeats joined with ", ", each value cut at
    MAX_HEADER_JSON and all of them at MAX_HEADERS_JSON once encoded: a server
    repeating a header (or sending a huge one) cannot blow up the result."""
    joined: dict[str, str] = {}
    for name, value in received:
        key = name.lower()
        if key in wanted:
            previous = joined.get(key)
            if previous is None:
                joined[key] = value
            elif len(previous) <= MAX_HEADER_JSON:  # past that it is cut anyway
                joined[key] = f"{previous}, {value}"
    headers: dict[str, str] = {}
    room = MAX_HEADERS_JSON
    for key, value in joined.items():
        room -= _json_size(key) + 4  # the key, ": " and ", "
        if room < 2:
            break
        headers[key] = _cut(value, min(MAX_HEADER_JSON, room))
        room -= _json_size(headers[key])
    return headers


def _retry_for(response: http.client.HTTPResponse, result: dict[str, Any]) -> None:
    message = f"HTTP {response.status} {response.reason} from {result['url']}"
    seconds = _retry_after_seconds(response.getheader("Retry-After"))
    if seconds is not None:
        raise RetryAfter(seconds, message)
    raise RetryableStatus(message)


def _retry_after_seconds(value: str | None) -> float | None:
    """Retry-After as delay-seconds or an HTTP date, capped; None when absent or bad."""
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():  # not "²": float() refuses it
        return min(float(value), MAX_RETRY_AFTER)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, OverflowError):  # OverflowError: a 20-digit hour or year
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return min(max(0.0, (when - datetime.now(UTC)).total_seconds()), MAX_RETRY_AFTER)


@handler(
    "http_request",
    payload=HttpRequestPayload,
    max_attempts=5,
    backoff=(2.0, 300.0),
    timeout=60,
    admit=admit,
)
def http_request(payload: HttpRequestPayload, ctx: JobContext) -> dict[str, Any]:
    """Refusals and TLS failures are permanent; connection errors, timeouts, DNS
    hiccups and the payload's retry_on_status statuses are retried with backoff."""
    policy, ca_file = policy_from(Settings.from_env())
    try:
        return perform(payload, policy, ctx, ca_file)
    except ssrf.Refused as exc:
        if exc.public == str(exc):
            raise
        # The job's error goes back to its tenant: the guard's full reason (what the
        # name resolved to) is the operator's, in the worker's log.
        log.warning("job %s: http_request refused by the SSRF guard: %s", ctx.job.id, exc)
        raise ssrf.Refused(exc.public) from None

"""`chalice local`'s HTTP handler, brought in line with `spool serve` where it read
requests otherwise.

Chalice's development server (chalice.local.ChaliceRequestHandler, on Python's
http.server) offers no hook for how it reads a request, and things it did
differently from `spool serve` (local/http_guard.py) mattered:

- of an X-API-Key header sent twice it kept the first line, so two different keys
  were served as the first one's tenant, where `spool serve` (whose server joins the
  lines with commas) and Lambda (multiValueHeaders) refuse different keys with 400;
- `int(Content-Length)` raised on `2, 2`, on two Content-Length lines or on `-1`
  read as no body, and a huge one raised in `read`: the connection was dropped
  with a traceback and no answer;
- the whole body was read into memory before the app's body limit
  (SPOOL_MAX_BODY_BYTES) could refuse it;
- a chunked body (Transfer-Encoding) was read as empty, beside a Content-Length
  framed by the length alone, and its unread chunks taken for the next request;
- OPTIONS was answered by chalice itself as a CORS preflight (200 to anyone, no key
  asked), where `spool serve` and app.py on Lambda answer 405 with Allow (stop 49);
- its route matcher captured path segments undecoded (`/status/a%2Fb` was the id
  `a%2Fb`, not `a/b`) and dropped a `;` and what follows (`/health;x` was /health;
  stop 49);
- a request line with two blanks together (`GET  /health`) was read, and a method
  not in upper case (`get`) was 405, where `spool serve` refuses both 400 (stop 49);
- chalice's events say 127.0.0.1 for every client, so the failed-sign-in count
  (SPOOL_AUTH_FAILURES) was one for all: a guesser anywhere got every key not yet
  signed in refused 429, its owner's too (stop 61); the handler now passes the
  socket's peer in `spool serve`'s X-Spool-Peer header, replacing any a client sent;
- a header line that is not `Name: value` (`X-Note : y`) ended the head as Python's
  parser reads it: the headers after it were dropped unsaid, their Content-Length
  too, and the body left unread was served as the connection's next request.
- it read with no timeout: a body shorter than its Content-Length, a head sent a
  byte at a time or an idle keep-alive connection held a thread until the client
  went (stop 61); requests are now read through chalice_local_deadline's reader,
  within `spool serve`'s SPOOL_HTTP_IDLE_TIMEOUT and SPOOL_HTTP_REQUEST_TIMEOUT
  (408 past the latter), and answers written within SPOOL_HTTP_SEND_TIMEOUT.

`install` (called by app.py only under `chalice local`, never on Lambda, where this
module is not imported) swaps the handler class of the server chalice builds for
SpoolRequestHandler, a subclass that changes only how the head is read before the
request reaches chalice's own code: the key lines joined as `spool serve` joins
them (app.py then refuses different keys, and takes the same key twice as once),
a head holding a line that is no header (or a folded one) answered 400, a
Content-Length that is not one size in plain digits answered 400, one over the
limit 413 before any of the body is read, and any Transfer-Encoding refused
(411; 400 beside a Content-Length), all in Spool's error shape, then the
connection closed. It wraps chalice.local.create_local_server, which chalice's
command line looks up at call time, and sets the built server's
RequestHandlerClass: chalice's LocalDevServer binds its handler class when
defined, so there is no other seam short of copying it.
"""

from __future__ import annotations

import errno
import functools
import io
import os
import re
import socket
import sys
import threading
import time
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler
from typing import Any, NoReturn
from urllib.parse import parse_qs, unquote, urlsplit

from chalicelib.api import http as api_http

# `spool serve`'s words for each refusal, from their one source (stop 48: copies).
from chalicelib.api.http import (
    FOLDED_HEADER,
    INVALID_HEADER,
    INVALID_LENGTH,
    INVALID_START_LINE,
    LENGTH_AND_CHUNKED,
    MAX_HEADER_BYTES,
    MAX_SHOWN_PATH,
    NON_ASCII_TARGET,
    body_too_large,
    head_too_large,
    method_not_upper,
)
from chalicelib.chalice_local_deadline import DeadlineReader
from chalicelib.http_timeouts import HttpTimeouts, request_timed_out

# A refused body the client already sent is read and dropped (up to this much, for
# up to DRAIN_SECONDS) before the close, so it reads the answer rather than a reset.
DRAIN_BYTES = 4 * 1024 * 1024
DRAIN_SECONDS = 2.0
_DIGITS = re.compile(r"[0-9]+")


def length_refusal(
    lengths: list[str], limit: int
) -> tuple[int, str, str, dict[str, int] | None] | None:
    """(status, code, message, details) refusing a request by its Content-Length
    lines (`lengths`, as sent), or None when it may be read: one line of plain
    digits, at most `limit`. No line is no body, as before."""
    if not lengths:
        return None
    value = lengths[0].strip(" \t")
    if len(lengths) > 1 or _DIGITS.fullmatch(value) is None:
        return 400, "bad_request", INVALID_LENGTH, None
    size = int(value)
    if size > limit:
        return (
            413,
            "payload_too_large",
            body_too_large(size, limit),
            {"limit": limit, "size": size},
        )
    return None


_NO_CHUNKED = (
    "chalice local's server does not read a Transfer-Encoding (chunked) body: send "
    "the body with Content-Length (`spool serve` reads chunked bodies)"
)


def head_refusal(headers: Any) -> tuple[int, str, str, None] | None:
    """The 400 for a head Python's parser could not read whole (`headers`: the
    http.client.HTTPMessage chalice's handler made), or None.

    That parser stops at the first line that is not `Name: value` (`X-Note : y`, a
    bare word) and keeps the lines after it as a payload http.server ignores: their
    X-API-Key and Content-Length were dropped unsaid, and a body left unread was
    taken for the connection's next request (a body that was itself a request got
    served). A nameless line is skipped and a folded one joined to the line before;
    `spool serve` refuses all of these, and so does this.

    The parser reads the (empty) body too, as the Content-Type says: a `multipart/*`
    one leaves defects about its missing boundaries, a `message/*` one an empty
    sub-message as the payload. Neither is a line of the head: such a Content-Type
    was refused as one (stop 49), where `spool serve` and Lambda read the body as
    JSON whatever its type."""
    from email.errors import FirstHeaderLineIsContinuationDefect

    defects = [d for d in headers.defects if type(d).__name__ not in _BODY_DEFECTS]
    if any(isinstance(d, FirstHeaderLineIsContinuationDefect) for d in defects) or any(
        "\n" in value or "\r" in value for value in headers.values()
    ):
        return 400, "bad_request", FOLDED_HEADER, None
    if defects or _holds_lines(headers.get_payload()):
        return 400, "bad_request", INVALID_HEADER, None
    return None


# What the parser says of a multipart body it finds empty (email.errors): not the head's.
_BODY_DEFECTS = frozenset(
    {
        "NoBoundaryInMultipartDefect",
        "StartBoundaryNotFoundDefect",
        "CloseBoundaryNotFoundDefect",
        "MultipartInvariantViolationDefect",
    }
)


def _holds_lines(payload: Any) -> bool:
    """Whether the parser's payload holds any of the head's lines: text, or (for a
    `message/*` Content-Type) a sub-message with a header or text of its own."""
    if isinstance(payload, list):
        return any(
            part.keys() or part.defects or _holds_lines(part.get_payload()) for part in payload
        )
    return bool(payload)


def framing_refusal(
    lengths: list[str], encodings: list[str], limit: int
) -> tuple[int, str, str, dict[str, int] | None] | None:
    """length_refusal, and first the Transfer-Encoding lines (`encodings`): chalice's
    handler frames by Content-Length alone, so a chunked body was read as empty (a
    cancel with a body `spool serve` refuses went through) and its chunks were then
    read as the connection's next request. Any Transfer-Encoding is refused: 400
    beside a Content-Length (ambiguous, as `spool serve` answers it), else 411."""
    if encodings:
        if lengths:
            return 400, "bad_request", LENGTH_AND_CHUNKED, None
        return 411, "length_required", _NO_CHUNKED, None
    return length_refusal(lengths, limit)


def install(environ: Mapping[str, str]) -> None:
    """Have `chalice local`'s server use SpoolRequestHandler (see the module's
    docstring); the body limit is read from `environ` once, as the app reads it."""
    from chalice import local

    from chalicelib.api.http import max_header_bytes
    from chalicelib.config import Settings

    settings = Settings.from_env(environ)
    handler: Callable[..., Any] = _handler_class(
        local.ChaliceRequestHandler,
        settings.max_body_bytes,
        max_header_bytes(settings),
        public_metrics=settings.metrics_public,
        timeouts=HttpTimeouts.from_settings(settings),
    )
    original = local.create_local_server
    if getattr(original, "spool_handler", False):
        return  # installed already (app.py imported twice)

    @functools.wraps(original)
    def create_local_server(app_obj: Any, config: Any, host: str, port: int) -> Any:
        try:
            server = original(app_obj, config, host, port)
        except OSError as exc:  # it was a traceback ending in "Address already in use"
            _refuse_to_listen(host, port, exc)
        server.server.RequestHandlerClass = functools.partial(
            handler, app_object=app_obj, config=config
        )
        pace_accepts(server.server)
        # The handler puts the socket's peer in PEER_HEADER (_parse_payload): app.py
        # counts failed sign-ins by it, where chalice's own sourceIp is always 127.0.0.1.
        api_http.PEER_HEADER_TRUSTED = True
        return server

    create_local_server.spool_handler = True  # type: ignore[attr-defined]
    local.create_local_server = create_local_server


# accept() failing for want of descriptors or memory: said, then paused this long.
_OUT_OF_ROOM = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)
ACCEPT_PAUSE = 0.25


def _say(text: str) -> None:
    """A line on stderr, as chalice's server writes its own: Spool's loggers are set
    up when the app first loads its engine, which may be after the server runs short."""
    print(f"chalice local: {text}", file=sys.stderr, flush=True)


def pace_accepts(http_server: Any) -> None:
    """Say an accept() refused for want of file descriptors, and wait a moment before
    the next, as `spool serve` does (local/http_guard.py).

    Under `prlimit --nofile=60` with 61 keep-alive connections held, `chalice local`
    answered no one and said nothing, and its accept loop spun at 70% of a core:
    socketserver drops get_request's OSError and selects again on a listening socket
    that stays readable. Said once (on stderr) until a connection is accepted again; the held
    connections close after SPOOL_HTTP_IDLE_TIMEOUT, and the waiting ones are served."""
    original = http_server.get_request
    refused = threading.Event()

    def get_request() -> Any:
        try:
            pair = original()
        except OSError as exc:
            if exc.errno in _OUT_OF_ROOM:
                if not refused.is_set():
                    refused.set()
                    _say(
                        f"accept() failed: {exc.strerror}: the process is at its file "
                        "descriptor limit (ulimit -n) or out of memory; new connections "
                        "wait until open ones close (idle ones after "
                        "SPOOL_HTTP_IDLE_TIMEOUT)"
                    )
                time.sleep(ACCEPT_PAUSE)
            raise
        if refused.is_set():
            refused.clear()
            _say("accept() works again: new connections are served")
        return pair

    http_server.get_request = get_request


def _refuse_to_listen(host: str, port: int, exc: OSError) -> NoReturn:
    """`spool serve`'s one line and exit 2 where chalice's server cannot bind: README's
    `chalice local` takes port 8000, as `make run` does, and a port already taken
    printed chalice's traceback instead."""
    if exc.errno == errno.EADDRINUSE:
        fix = "Pick another port (chalice local --port N) or stop what is using it"
    else:
        fix = "--host must be an address of this machine (127.0.0.1: this machine only)"
    print(f"spool: cannot listen on {host}:{port}: {exc.strerror or exc}. {fix}.", file=sys.stderr)
    sys.stderr.flush()
    if threading.current_thread() is not threading.main_thread():
        os._exit(2)  # the autoreloader's child serves from a thread: end the process
    raise SystemExit(2)


def _handler_class(
    base: type[Any],
    limit: int,
    head_limit: int = MAX_HEADER_BYTES,
    public_metrics: bool = False,
    timeouts: HttpTimeouts = HttpTimeouts(),
) -> type[Any]:
    """chalice's request handler with Spool's reading of the head (the module's
    docstring): built here, so that chalice.local is imported by install only.
    `public_metrics` (SPOOL_METRICS_PUBLIC): /metrics takes no key, so on a loopback
    address it answers local Host names only (rebinding_refusal). `timeouts`: how
    long a client may take (SPOOL_HTTP_*_TIMEOUT), as under `spool serve`."""
    from chalice.local import LambdaEventConverter, LocalGateway, MatchResult, RouteMatcher

    class DecodingRouteMatcher(RouteMatcher):  # type: ignore[misc]
        """chalice's RouteMatcher, reading the path as `spool serve` and API Gateway do
        (stop 49): split where the client put a `/`, each segment matched and captured
        decoded (`/status/a%2Fb` is the id `a/b`, `/%68ealth` is /health, `%00` a control
        character app.py answers 404 no route), and a `;` part of the path (urlparse
        dropped it and what follows: `/health;x` was served as /health)."""

        def match_route(self, url: str) -> Any:
            parts = urlsplit(url)
            path = parts.path
            if path != "/" and path.endswith("/"):  # as chalice's, and API Gateway
                path = path[:-1]
            segments = [unquote(segment, errors="replace") for segment in path.split("/")]
            for route_url in self.route_urls:
                template = route_url.split("/")
                if len(template) != len(segments):
                    continue
                captured = {}
                for segment, part in zip(segments, template, strict=True):
                    if part.startswith("{") and part.endswith("}"):
                        captured[part[1:-1]] = segment
                    elif segment != part:
                        break
                else:
                    query = parse_qs(parts.query, keep_blank_values=True)
                    return MatchResult(route_url, captured, query)
            raise ValueError(f"No matching route found for: {url}")

    from chalicelib.api.errors import error_body
    from chalicelib.api.http import API_HEADERS, dumps, with_ui_headers

    head_limit_ = head_limit

    class NoPreflightGateway(LocalGateway):  # type: ignore[misc]
        def __init__(self, app_object: Any, config: Any) -> None:
            super().__init__(app_object, config)
            self.event_converter = LambdaEventConverter(
                DecodingRouteMatcher(list(app_object.routes)), app_object.api.binary_types
            )

        def _has_user_defined_options_method(self, lambda_event: Any) -> bool:
            """Send OPTIONS to the app as any other method, as `spool serve` does
            (local/server.py's _Gateway): LocalGateway answered it itself as a CORS
            preflight, 200 to anyone with no key asked; Spool enables no CORS, so the
            app's 405 with Allow is the answer, as app.py gives a Lambda event."""
            return True

    class SpoolRequestHandler(base):  # type: ignore[misc, valid-type]
        body_limit = limit
        head_limit = head_limit_
        rfile: Any
        deadline: DeadlineReader

        def __init__(
            self, request: Any, client_address: Any, server: Any, app_object: Any, config: Any
        ) -> None:
            # chalice's __init__ makes its LocalGateway, then serves the connection.
            self.local_gateway = NoPreflightGateway(app_object, config)
            BaseHTTPRequestHandler.__init__(self, request, client_address, server)

        def setup(self) -> None:
            """http.server's files on the socket, reading through a DeadlineReader:
            its own read with no timeout let a client that sends too little, or
            nothing, hold this thread for as long as it stayed connected."""
            super().setup()
            self.rfile.close()  # the socket stays open: the writer and we still use it
            self.deadline = DeadlineReader(self.connection, timeouts.send)
            self.rfile = io.BufferedReader(self.deadline)

        def handle(self) -> None:
            """http.server's loop over the connection's requests, each waited for at
            most SPOOL_HTTP_IDLE_TIMEOUT and then read whole, head and body, within
            SPOOL_HTTP_REQUEST_TIMEOUT of its first byte (408 past it), as `spool
            serve` bounds them; the connection then ends and frees this thread."""
            self.close_connection = True
            while self._next_request():
                self.handle_one_request()
                if self.deadline.expired:
                    self._time_out()
                    return
                if self.close_connection:
                    return

        def _next_request(self) -> bool:
            """Wait for a request's first byte (already here when the client sent
            it with the last one), then start its clock. False when none comes: the
            client closed, or stayed idle; the connection is then closed without an
            answer, as `spool serve` closes an idle one."""
            self.deadline.expect(timeouts.idle)
            try:
                waiting = self.rfile.peek(1)
            except OSError:  # TimeoutError (idle) or the client gone
                return False
            if not waiting:
                return False
            self.deadline.expect(timeouts.request)
            # What the last request left: a 408 to this one must not read it.
            self.raw_requestline = b""
            self.requestline = ""
            self.request_version = "HTTP/1.1"
            self.command = ""
            return True

        def _time_out(self) -> None:
            """The 408 to a request whose head or body did not arrive in time, in
            Spool's shape and `spool serve`'s words (nothing of an answer has been
            written while the request was still being read), then the close."""
            self.close_connection = True
            seconds = timeouts.request
            body = dumps(
                error_body("request_timeout", request_timed_out(seconds), {"timeout": seconds})
            ).encode()
            if self.request_version == "HTTP/0.9":
                self.request_version = "HTTP/1.0"
            try:
                self.send_response(408)
                for name, value in {
                    **self._refusal_headers(),
                    "Content-Type": "application/json",
                    "Connection": "close",
                    "Content-Length": str(len(body)),
                }.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(body)
            except OSError:
                pass  # the client went, or does not read: nothing more to do

        def log_error(self, format: str, *args: Any) -> None:
            """http.server's line for a read that timed out, unless the request's
            deadline ran out: `_time_out` answers that one 408, and the 408's own
            access line records it (`"POST /enqueue HTTP/1.1" 408 -`, or `"" 408 -`
            for a request line that never came), so each such request was logged
            twice. A write that timed out sends no 408 and keeps http.server's line."""
            if format.startswith("Request timed out") and self.deadline.expired:
                return
            super().log_error(format, *args)

        def _parse_payload(self) -> tuple[dict[str, Any], bytes | None]:
            headers, body = super()._parse_payload()
            # A body cut off by the client's close: chalice read what came and ran it
            # (`{"type": "echo"}` under a Content-Length of 100, then close, was a
            # job enqueued). `spool serve` runs nothing of a request it did not get
            # whole; _spool_handle ends the connection without an answer.
            if len(body or b"") < int(self.headers.get("content-length", "0")):
                raise _ClientGone
            for joined in _JOINED:
                lines = self.headers.get_all(joined) or []
                if len(lines) > 1:  # as `spool serve`'s server joins them: app.py reads each
                    for name in headers:
                        if name.lower() == joined:
                            headers[name] = ", ".join(lines)
            # Who is calling is the socket's peer, as `spool serve` says it
            # (local/server.py): chalice's events all say 127.0.0.1, so one guesser
            # anywhere spent every client's failed-sign-in allowance. Any header of
            # that name a client sent is dropped first: no one chooses their address.
            for name in [name for name in headers if name.lower() == api_http.PEER_HEADER]:
                del headers[name]
            headers[api_http.PEER_HEADER] = str(self.client_address[0])
            return headers, body

        def _spool_handle(self) -> None:
            refusal = (
                line_refusal(self.raw_requestline)
                or target_refusal(self.path)
                or head_refusal(self.headers)
                or framing_refusal(
                    self.headers.get_all("content-length") or [],
                    self.headers.get_all("transfer-encoding") or [],
                    self.body_limit,
                )
                or (
                    rebinding_refusal(
                        self.path, self.headers.get("Host"), str(self.server.server_address[0])
                    )
                    if public_metrics
                    else None
                )
            )
            if refusal is None:
                try:
                    self._generic_handle()
                except _ClientGone:  # the client closed before its body was whole
                    self.close_connection = True
                return
            status, code, message, details = refusal
            self.close_connection = True
            body = dumps(error_body(code, message, details))
            headers = {**self._refusal_headers(), "Connection": "close"}
            self._send_http_response(status, headers, body)
            self._drain()

        def _refusal_headers(self) -> dict[str, str]:
            """Every answer's headers; under /ui the dashboard's too (its CSP and framing
            rules), as its other answers carry. The target is read from the request line
            as sent: one http.server could not read has set no path."""
            line: bytes = getattr(self, "raw_requestline", b"") or b""
            words = line.split()
            target = words[1].decode("latin-1") if len(words) >= 2 else ""
            return with_ui_headers(target, API_HEADERS)

        def _drain(self) -> None:
            """Read and drop what the client still sends of a refused body, for a
            while, so that closing with it unread does not reset the connection
            before the client has read its answer."""
            self.wfile.flush()
            connection: socket.socket = self.connection
            try:
                connection.shutdown(socket.SHUT_WR)
                until = time.monotonic() + DRAIN_SECONDS
                dropped = 0
                while dropped < DRAIN_BYTES:
                    left = until - time.monotonic()
                    if left <= 0:
                        break
                    connection.settimeout(left)
                    chunk = connection.recv(65536)
                    if not chunk:
                        break
                    dropped += len(chunk)
            except OSError:
                pass  # the client went: nothing more to do

        def parse_request(self) -> bool:
            """http.server's reading of the request line and head, then `spool serve`'s
            limit on them together (SPOOL_HTTP_MAX_HEADER_BYTES): http.server took a
            line of up to 64 KiB and 100 header lines of as much each.

            A head cut off by the client's close (its blank line never came) is no
            request: http.server reads the end of the stream as the end of the head,
            so `POST /jobs/ID/cancel` sent without its last line, then closed,
            cancelled the job. `spool serve` dispatches nothing for it; neither does
            this (the connection ends without an answer, as the client has gone)."""
            reading = _LastLine(self.rfile)
            self.rfile = reading
            try:
                if not super().parse_request():
                    return False
            finally:
                self.rfile = reading.stream
            if reading.last == b"":  # the stream ended before the head's blank line
                self.close_connection = True
                return False
            if head_size(self.raw_requestline, self.headers) >= self.head_limit:
                # The answer's log line shows the start of the line, not all 16 KiB or more.
                line: str = getattr(self, "requestline", "")
                if len(line) > MAX_SHOWN_PATH:
                    self.requestline = f"{line[:MAX_SHOWN_PATH]}..."
                self.send_error(431, _OVER_HEAD_LIMIT)
                return False
            return True

        def send_error(self, code: int, message: str | None = None, explain: Any = None) -> None:
            """http.server's own refusals of a request line or head it cannot read (a
            fourth word, a version that is not HTTP/1.x, a line over 64 KiB, too many
            headers) were its HTML page: in Spool's shape now, with its status, and
            the connection closed as it closes it."""
            words = _LINE_ERRORS.get(code, message or "the request cannot be read")
            kind = "headers_too_large" if code == 431 else "bad_request"
            details = None
            over = code == 414 or (code == 431 and message == "Line too long")
            if message == _OVER_HEAD_LIMIT or (over and self.head_limit <= _LINE_MAX):
                # Over `spool serve`'s limit too: its 431, in its words (stop 49).
                code, kind, words = 431, "headers_too_large", head_too_large(self.head_limit)
                details = {"limit": self.head_limit}
            body = dumps(error_body(kind, words, details)).encode()
            self.close_connection = True
            version: str = getattr(self, "request_version", "")
            if version == "HTTP/0.9":  # not read yet: answer as HTTP/1.0, with a head
                self.request_version = "HTTP/1.0"
            self.send_response(code)  # its own reason phrase, not the client's words
            for name, value in {
                **self._refusal_headers(),
                "Content-Type": "application/json",
            }.items():
                self.send_header(name, value)
            self.send_header("Connection", "close")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def _send_error_response(self, error: Any) -> None:
            """chalice's imitation of API Gateway's default for a path no route has
            (`403 {"message": "Missing Authentication Token"}`, or another 403 about
            AWS signatures when an Authorization header came) told a new user who
            mistyped a path of a key they had sent. The deployed API's gateway
            responses answer it 404 in Spool's shape (infra/generate.py
            GATEWAY_ERRORS), as `spool serve` does: so does this."""
            if error.headers.get("x-amzn-ErrorType") == "UnauthorizedException":
                body = dumps(error_body("not_found", no_route_message(self.command)))
                plain = {**API_HEADERS, "Content-Type": "application/json"}
                headers = with_ui_headers(self.path, plain)  # as the dashboard's errors
                if self.command == "HEAD":  # no body: it would be read as the next answer
                    self._send_http_response_no_body(404, headers)
                else:
                    self._send_http_response(404, headers, body)
                return
            super()._send_error_response(error)

        def __getattr__(self, name: str) -> Any:
            """A method http.server has no do_<METHOD> for (TRACE, any other token)
            was its HTML `501 Unsupported method`: chalice answers it as any method
            a route lacks (405 with Allow, Spool's shape), as `spool serve` does."""
            if name.startswith("do_") and _TOKEN.fullmatch(name[3:]):
                return self._spool_handle
            raise AttributeError(name)

        # chalice binds every do_<METHOD> to its _generic_handle when its class is made.
        do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = do_PATCH = do_OPTIONS = _spool_handle

    return SpoolRequestHandler


class _ClientGone(Exception):
    """The client closed its side before the request it began was whole."""


class _LastLine:
    """The handler's rfile, remembering the last line read from it: http.client's
    parse_headers stops at a blank line or at the end of the stream alike, and only
    the line it stopped at tells the two apart."""

    def __init__(self, stream: Any) -> None:
        self.stream = stream
        self.last: bytes | None = None

    def readline(self, limit: int = -1) -> bytes:
        line: bytes = self.stream.readline(limit)
        self.last = line
        return line

    def __getattr__(self, name: str) -> Any:
        return getattr(self.stream, name)


# `spool serve`'s server's reading of a request line (waitress.parser.first_line_re):
# one space between the method, the target and the version, none inside the target.
_START_LINE = re.compile(
    rb"(?P<method>[!#$%&'*+\-.^_`|~0-9A-Za-z]+) "
    rb"(?:[^ :?#]+://[^ ?#/]*(?:[0-9]{1,5})?)?[^ ]+"
    rb"(?: HTTP/[0-9]\.[0-9])?"
)


def line_refusal(raw: bytes) -> tuple[int, str, str, None] | None:
    """The 400 for a request line `spool serve`'s server refuses, or None: http.server
    split it on any run of blanks (`GET  /health`, a path's unencoded space first,
    was served) and took a method in any case (`get` was 405). In its words."""
    found = _START_LINE.fullmatch(raw.rstrip(b"\r\n"))
    if found is None:
        return 400, "bad_request", INVALID_START_LINE, None
    method = found.group("method")
    if method != method.upper():
        return 400, "bad_request", method_not_upper(method.decode("latin-1")), None
    return None


def rebinding_refusal(
    target: str, host: str | None, bound: str
) -> tuple[int, str, str, None] | None:
    """403 for the public /metrics asked under another site's name on a loopback address
    (chalicelib/local_hosts.py: a DNS-rebinding web page), as `spool serve` answers."""
    from chalicelib.local_hosts import METRICS_ELSEWHERE, local_host_only, metrics_path, serves_host

    if not metrics_path(unquote(urlsplit(target).path)) or not local_host_only(bound):
        return None
    return (
        None if serves_host(host, local_only=True) else (403, "forbidden", METRICS_ELSEWHERE, None)
    )


def target_refusal(path: str) -> tuple[int, str, str, None] | None:
    """The 400 for a request target holding bytes past ASCII (what curl sends for
    `?find=café`), which http.server reads as latin-1: the dashboard searched for
    "cafÃ©" and found nothing, where `spool serve` refuses the target saying to
    percent-encode it (stop 49)."""
    if path.isascii():
        return None
    return 400, "bad_request", NON_ASCII_TARGET, None


# What http.server's send_error codes mean for a request it could not read, said so a
# client can act (its own words are "Bad request version ('x')" and the like).
# What http.server reads of one line before its own refusal (414, 431 Line too long).
_LINE_MAX = 65536
_OVER_HEAD_LIMIT = "over the head limit"


def head_size(request_line: bytes, headers: Any) -> int:
    """The bytes of a request line and head as sent, near enough (`Name: value` and
    CRLF a line, and the blank line's CRLF): what `spool serve`'s server counts
    against SPOOL_HTTP_MAX_HEADER_BYTES."""
    lines = sum(len(name) + len(value) + 4 for name, value in headers.raw_items())
    return len(request_line) + lines + 2


_LINE_ERRORS = {
    400: INVALID_START_LINE,
    414: ("the request line is over 65536 bytes: shorten the URL (its path and query string)"),
    431: (
        "the request head is too large (a header line over 65536 bytes, or over 100 "
        "headers): shorten the headers or send fewer"
    ),
    501: "the method is not an HTTP method token (letters, such as GET or POST)",
    505: "the HTTP version must be HTTP/1.1 (or HTTP/1.0): send `METHOD /path HTTP/1.1`",
}


# Headers whose lines are joined as `spool serve`'s server joins them, for app.py to
# read each value (gateway_event.LISTED): http.server's dict kept one line of each.
_JOINED = ("x-api-key", "authorization")


# An HTTP method is a token (RFC 9110 9.1).
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")


def no_route_message(method: str) -> str:
    """What the deployed API answers (404 not_found) for a path no route has: its
    gateway response's words (infra/generate.py GATEWAY_ERRORS), the method filled in."""
    return f"no route for {method} on this path"

"""Serve the same app.py through a production WSGI server.

`chalice local` is a development server (about 23 requests/s on one keep-alive
connection). Here each WSGI request becomes the event API Gateway would send,
via chalice's own LocalGateway, and app.py answers it exactly as on Lambda;
waitress does the HTTP part.

Why waitress: pure Python (nothing to compile, runs wherever Python does,
Windows included), a fixed pool of worker threads behind one asyncore loop
(no fork, so the emulated worker pool and the runtime live in the same
process beside it), HTTP/1.1 keep-alive and pipelining, request size limits
and slow-client buffering done properly, and it can be created, run in a
thread and stopped from code, which the tests and `spool serve` need.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import http
import json
import logging
import re
import socket
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import parse_qs, unquote, unquote_to_bytes, urlparse

from chalice.app import Chalice
from chalice.config import Config
from chalice.local import (
    ForbiddenError,
    LambdaContext,
    LambdaEventConverter,
    LocalChalice,
    LocalGateway,
    LocalGatewayException,
    MatchResult,
    RouteMatcher,
)
from waitress import wasyncore
from waitress.adjustments import Adjustments

from chalicelib import logs
from chalicelib.api import http as api_http
from chalicelib.api.errors import error_body
from chalicelib.api.gateway_event import LISTED, listed_values
from chalicelib.api.http import dumps
from chalicelib.api.waits import serving_for
from local.direct_dispatch import DirectDispatch
from local.fair_queue import TenantOf
from local.http_guard import guarded_classes
from local.http_limits import HttpLimits, fit_connections
from local.inline_dispatch import InlineTaskDispatcher, QuickRequest, TaskDispatcher

StartResponse = Callable[[str, list[tuple[str, str]]], Any]
# No body past this is ever buffered, whatever SPOOL_MAX_BODY_BYTES says
# (API Gateway's own limit is 10 MiB).
HARD_BODY_LIMIT = 10 * 1024 * 1024
DEFAULT_THREADS = 16


def make_thread_safe(app: Chalice) -> Chalice:
    """Give the app a per-thread current_request, as `chalice local` does.

    Chalice keeps the request on the app object: fine for one Lambda call at a
    time, a race under a threaded server.
    """
    if not isinstance(app, LocalChalice):
        cls = app.__class__
        app.__class__ = type(f"ThreadLocal{cls.__name__}", (LocalChalice, cls), {})
    return app


_REASONS = {int(status): status.phrase for status in http.HTTPStatus}


def _reason(status: int) -> str:
    return _REASONS.get(status, "Unknown")


class RouteTable(RouteMatcher):
    """chalice's RouteMatcher, answering exactly as it does (tests/test_server_routes.py
    compares the two), without splitting every route template on every request.

    chalice tries each template in sorted order and returns the first whose
    segments match; only templates with as many segments as the path, and the same
    first segment or a capture there, can match, so those are tried, in the same
    order, already split. A path with nothing urlparse would change (no query,
    parameters, fragment or `//`) skips it.
    """

    def __init__(self, route_urls: list[str]) -> None:
        super().__init__(route_urls)
        # Templates by (number of segments, first segment), in chalice's order: a path
        # whose first segment is X can match only templates whose first segment is X
        # or a capture; those whose first segment is a capture, under (n, None). A
        # template skipped fails at that segment in chalice's loop, having captured
        # nothing (the segment before it is the empty one before the leading `/`).
        self._by_head: dict[tuple[int, str | None], list[tuple[str, list[str]]]] = {}
        # Paths (with nothing urlparse would change, as sent) that matched a template
        # without captures, and that template: the same path always matches it, with
        # nothing captured and no query, so the loop below runs once per such path.
        # Only a template without captures captures nothing, so this holds at most
        # two paths a template (with and without a trailing `/`); bounded all the same.
        self._static: dict[str, str] = {}
        split = [(url, url.split("/")) for url in self.route_urls]
        for _, parts in split:
            n = len(parts)
            self._by_head.setdefault((n, None), [])
            if n > 1 and not _captures(parts[1]):
                self._by_head.setdefault((n, parts[1]), [])
        for (n, head), templates in self._by_head.items():
            templates.extend(
                (url, parts)
                for url, parts in split
                if len(parts) == n and (n < 2 or _captures(parts[1]) or parts[1] == head)
            )

    def match_route(self, url: str) -> MatchResult:
        static = self._static.get(url)
        if static is not None:  # a path seen before that matched a template without captures
            return MatchResult(static, {}, {})
        query: dict[str, list[str]] = {}
        plain = not (
            url.startswith("//") or not url.startswith("/") or _URL_SPECIAL.search(url) is not None
        )
        if not plain:
            parsed = urlparse(url)
            # Bytes that are not UTF-8 become lone surrogates, which the app refuses
            # (400, as a Lambda event's are), not U+FFFD: a `find=%FF` searched for "\ufffd".
            query = parse_qs(parsed.query, keep_blank_values=True, errors="surrogateescape")
            path = parsed.path
        else:
            path = url
        if path != "/" and path.endswith("/"):
            path = path[:-1]
        parts = path.split("/")
        n = len(parts)
        by_head = self._by_head
        templates = by_head.get((n, parts[1])) if n > 1 else None
        if templates is None:
            templates = by_head.get((n, None), [])
        captured: dict[str, str] = {}
        for route_url, url_parts in templates:
            for i, j in zip(parts, url_parts, strict=True):
                if j.startswith("{") and j.endswith("}"):
                    captured[j[1:-1]] = i
                    continue
                if i != j:
                    break
            else:
                if plain and not captured and len(self._static) < STATIC_KEPT:
                    self._static[url] = route_url
                return MatchResult(route_url, captured, query)
        raise ValueError(f"No matching route found for: {url}")


STATIC_KEPT = 256


def _captures(part: str) -> bool:
    """A template segment that captures a parameter, as chalice's matcher tells one."""
    return part.startswith("{") and part.endswith("}")


# What urlparse would read as other than path: a query, parameters, a fragment, and
# the tabs and line breaks it drops.
_URL_SPECIAL = re.compile("[?;#\t\r\n]")


# Carries, from _headers to the event, the values of a LISTED header (the X-API-Key,
# the Content-Type) sent more than once: waitress joins repeated headers with commas,
# which neither holds of its own (chalicelib/api/gateway_event.py LISTED).
_REPEATED_KEY = "x-spool-repeated-headers"


class _EventConverter(LambdaEventConverter):
    """chalice's event, with multiValueHeaders for a repeated X-API-Key or
    Content-Type, as API Gateway's event has: app.py answers different values 400
    there, and the same value twice as once. Path parameters arrive decoded, as API Gateway's do."""

    def create_lambda_event(
        self, method: str, path: str, headers: dict[str, str], body: bytes | None = None
    ) -> dict[str, Any]:
        """chalice's LambdaEventConverter.create_lambda_event, key for key and in the
        same order (tests/test_server_adapter.py compares the two), built in one go:
        its copy of the headers with every name lower-cased again is skipped when
        `headers` comes from _headers, whose names are lower-case already."""
        return self.event_for(method, path, headers, body, self._route_matcher.match_route(path))

    def event_for(
        self,
        method: str,
        path: str,
        headers: dict[str, str],
        body: bytes | None,
        view_route: MatchResult,
    ) -> dict[str, Any]:
        """create_lambda_event for a path already matched to `view_route`."""
        repeated = headers.pop(_REPEATED_KEY, None)
        # The segments' escapes (_path) undone: API Gateway passes `abc;def` and `a/b`.
        captured = view_route.captured
        if captured:
            captured = {name: unquote(value) for name, value in captured.items()}
        lowered = (
            headers
            if type(headers) is _LowerHeaders
            else {k.lower(): v for k, v in headers.items()}
        )
        event: dict[str, Any] = {
            "requestContext": {
                "httpMethod": method,
                "resourcePath": view_route.route,
                "identity": {"sourceIp": self.LOCAL_SOURCE_IP},
                "path": path.split("?")[0],
            },
            "headers": lowered,
            "pathParameters": captured,
            "stageVariables": {},
            "multiValueQueryStringParameters": view_route.query_params or None,
        }
        if self._is_binary(headers) and body is not None:
            event["body"] = base64.b64encode(body).decode("ascii")
            event["isBase64Encoded"] = True
        else:
            event["body"] = body
        if repeated is not None:
            event["multiValueHeaders"] = json.loads(repeated)
        return event


class _Gateway(LocalGateway):
    """LocalGateway, reading the function's settings once instead of per request
    (chalice's Config lookups were a tenth of a status request's cost), and
    matching routes through RouteTable."""

    def __init__(self, app: Chalice, config: Config) -> None:
        super().__init__(app, config)
        timeout = config.lambda_timeout or self.MAX_LAMBDA_EXECUTION_TIME
        self._context_args = (config.function_name, config.lambda_memory_size, timeout * 1000)
        self.routes = RouteTable(list(app.routes))
        self.converter = _EventConverter(self.routes, app.api.binary_types)
        self.event_converter = self.converter

    def _generate_lambda_context(self) -> LambdaContext:
        name, memory, timeout_ms = self._context_args
        return LambdaContext(name, memory, max_runtime_ms=timeout_ms)

    def _has_user_defined_options_method(self, lambda_event: Any) -> bool:
        """Send OPTIONS to the app as any other method. LocalGateway would answer it
        itself as a CORS preflight: 200 to anyone, with no key asked, no log line and
        none of the app's headers; Spool enables no CORS, so the app's 405 is the answer."""
        return True


class ChaliceWSGI:
    """A WSGI application that hands every request to a Chalice app.

    With `direct` (the default), a request for one of the app's plain routes runs its
    view through local/direct_dispatch.py instead of chalice's LocalGateway: the same
    event, request, view and middleware, without the per-request scaffolding that
    cannot change the answer. `direct=False` sends every request through the gateway
    (the reference tests/test_direct_dispatch.py compares against)."""

    def __init__(self, app: Chalice, config: Config | None = None, direct: bool = True) -> None:
        api_http.PEER_HEADER_TRUSTED = True  # _headers puts the socket's peer there
        self.app = make_thread_safe(app)
        self.gateway = _Gateway(
            app, config or Config.create(chalice_stage="local", app_name=app.app_name)
        )
        gateway = self.gateway
        self.direct = (
            DirectDispatch(app, gateway.routes, gateway.converter.event_for) if direct else None
        )

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        logs.not_in_invocation()  # the emulated worker's invocation id is not this line's
        method = environ["REQUEST_METHOD"]
        # HEAD is GET without the body (RFC 9110 9.3.2): a load balancer's probe of
        # /health gets the GET's status and headers. waitress sends whatever body the
        # app returns, and on a kept-alive connection the client would read those bytes
        # as the start of the next response, so none is returned.
        head = method == "HEAD"
        if head:
            method = "GET"
        send = _send_head if head else _send
        path = _path(environ)
        if api_http.CONTROL.search(path) is not None:
            logs.http_request(method, "-", 404, 0.0, None, path=path.split("?")[0])
            shown = api_http.shown_path(path.split("?")[0])
            headers, payload = _no_route(method, shown, api_http.CONTROL_IN_PATH)
            return send(start_response, 404, api_http.with_ui_headers(path, headers), payload)
        headers = _headers(environ)
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length) if length > 0 else None
        if self.direct is not None:
            answer = self.direct.answer(method, path, headers, body)
            if answer is not None:
                return send(start_response, answer.status, answer.headers, answer.body)
        try:
            response = self.gateway.handle_request(method, path, headers, body)
        except ForbiddenError:
            # Our app has no authorizers, so the gateway refuses only unknown
            # paths (API Gateway's 403 "Missing Authentication Token"); a real
            # server says 404.
            headers, payload = _no_route(method, path.split("?")[0])
            return send(start_response, 404, api_http.with_ui_headers(path, headers), payload)
        except LocalGatewayException as exc:
            return send(start_response, exc.CODE, dict(exc.headers), exc.body or b"")
        out: dict[str, Any] = dict(response.get("headers") or {})
        out.update(response.get("multiValueHeaders") or {})
        raw = response.get("body")
        if response.get("isBase64Encoded") and raw is not None:
            raw = base64.b64decode(raw)
        return send(start_response, int(response["statusCode"]), out, raw or b"")


# A control character in the path (sent as %09, %0A, %0D, %00...): urlparse drops
# tabs and line breaks, so `/met%09rics` reached /metrics past a proxy's rule for it.


def _no_route(method: str, shown: str, why: str = "") -> tuple[dict[str, str], str]:
    """The headers and body of a 404 no route matched (API Gateway's answer to a path
    holding a control character is no route too; app.py answers such an event so).
    The path is the client's text: api_http.no_route echoes only the start of it."""
    payload = dumps(error_body("not_found", api_http.no_route(method, shown, why)))
    return {**api_http.API_HEADERS, "Content-Type": "application/json"}, payload


def _path(environ: dict[str, Any]) -> str:
    """The path the route matcher reads: each segment decoded, as API Gateway matches
    and delivers them, with what would change the matcher's reading escaped.

    Split where the client put a `/`, not where a decoded `%2F` is: API Gateway
    matches `/status/abc%2Fdef` to /status/{id} with the id `abc/def`, where
    PATH_INFO (decoded, PEP 3333) had three segments and no route matched. What
    urlparse (the matcher's) would read as anything but path stays path: `?` and
    `#`, and `;`, whose tail it drops as "parameters" (`/metrics;x` answered as
    /metrics, past a proxy's rule for it; API Gateway matches `;` as any other
    character). _EventConverter undoes the escapes in the captured parameters, so
    the app reads `abc;def`, not `abc%3Bdef`.
    """
    path = _plain_path(environ)
    if path is None:
        path = "/".join(_escape_segment(s) for s in _segments(environ)) or "/"
    query = environ.get("QUERY_STRING", "")
    return f"{path}?{query}" if query else path


def _plain_path(environ: dict[str, Any]) -> str | None:
    """PATH_INFO itself, when the general reading (_segments, _escape_segment) would
    give it back unchanged, else None: the client sent it with no escape (no `%`),
    all ASCII (so reading it as UTF-8 changes nothing) and with no `;` (the one
    character _escape_segment would escape that a raw path can hold; `?` and `#`
    end it). Nearly every request's path, read without splitting and decoding it."""
    decoded = environ.get("PATH_INFO", "/")
    if not decoded.isascii() or "%" in decoded or ";" in decoded:
        return None
    return decoded if _raw_path(environ) == decoded else None


def _segments(environ: dict[str, Any]) -> list[str]:
    """The request's path segments, each percent-decoded and read as UTF-8."""
    decoded: str = environ.get("PATH_INFO", "/")  # latin-1 for bytes (PEP 3333)
    raw = _raw_path(environ)
    # Each raw segment decoded once; joined, they are PATH_INFO when the raw path is
    # the one PATH_INFO was decoded from.
    parts = [] if raw is None else [unquote_to_bytes(p.encode("latin-1")) for p in raw.split("/")]
    if not parts or b"/".join(parts).decode("latin-1") != decoded:
        # behind a url_prefix, or an absolute-form URI: PATH_INFO's every `/` divides
        parts = [part.encode("latin-1") for part in decoded.split("/")]
    return [part.decode("utf-8", "replace") for part in parts]


def _raw_path(environ: dict[str, Any]) -> str | None:
    """The path as the client sent it (waitress's REQUEST_URI), leading `/`s made one
    as waitress makes PATH_INFO's; None for an absolute-form URI (`http://h/x`)."""
    uri = environ.get("REQUEST_URI")
    if not isinstance(uri, str):
        return None
    path = uri.split("#", 1)[0].split("?", 1)[0]
    if not path.startswith("/"):
        return None
    return "/" + path.lstrip("/")


# A decoded segment's characters that would end it or change how it is read, and
# `%` so that each escape is undone exactly (a job id holding "%3B" stays "%3B").
_SEGMENT_ESCAPES = str.maketrans({"%": "%25", "/": "%2F", "?": "%3F", "#": "%23", ";": "%3B"})


def _escape_segment(segment: str) -> str:
    return segment.translate(_SEGMENT_ESCAPES)


class _LowerHeaders(dict[str, str]):
    """A request's headers as _headers makes them: every name lower-case already."""


# For each sequence of environ keys seen (a client sends the same headers in the same
# order on every request), its HTTP_ keys and their header names, in environ's order:
# one lookup instead of a test of every key and a rewrite of every header's name.
_HEADER_KEYS: dict[tuple[str, ...], tuple[tuple[str, str], ...]] = {}
HEADER_KEYS_KEPT = 1024


def _header_keys(environ: dict[str, Any]) -> tuple[tuple[str, str], ...]:
    keys = tuple(environ)
    pairs = _HEADER_KEYS.get(keys)
    if pairs is None:
        pairs = tuple((k, k[5:].replace("_", "-").lower()) for k in keys if k[:5] == "HTTP_")
        if len(_HEADER_KEYS) >= HEADER_KEYS_KEPT:
            _HEADER_KEYS.clear()
        _HEADER_KEYS[keys] = pairs
    return pairs


def _headers(environ: dict[str, Any]) -> dict[str, str]:
    headers = _LowerHeaders({name: environ[key] for key, name in _header_keys(environ)})
    if environ.get("CONTENT_TYPE"):
        headers["content-type"] = environ["CONTENT_TYPE"]
    if environ.get("CONTENT_LENGTH"):
        headers["content-length"] = environ["CONTENT_LENGTH"]
    # Ours, never the client's: the gateway below says 127.0.0.1 for everyone.
    headers[api_http.PEER_HEADER] = str(environ.get("REMOTE_ADDR") or "")
    headers.pop(_REPEATED_KEY, None)
    repeated: dict[str, list[str]] = {}
    for name in LISTED:
        line = headers.get(name)
        if line is not None and "," in line:
            values = listed_values(name, line)
            if len(values) > 1:
                headers[name] = values[-1]  # API Gateway keeps the last
                repeated[name] = values
    if repeated:
        headers[_REPEATED_KEY] = json.dumps(repeated)
    return headers


def _send(
    start_response: StartResponse, status: int, headers: dict[str, Any], body: str | bytes
) -> list[bytes]:
    data = body.encode("utf-8") if isinstance(body, str) else body
    pairs: list[tuple[str, str]] = []
    typed = False  # a Content-Type header is among the pairs
    for name, value in headers.items():
        lower = name.lower()
        if lower == "content-length":
            continue
        if isinstance(value, list):
            pairs.extend((name, str(v)) for v in value)
            typed = typed or (lower == "content-type" and bool(value))
        else:
            pairs.append((name, str(value)))
            typed = typed or lower == "content-type"
    if data and not typed:
        pairs.append(("Content-Type", "application/json"))
    pairs.append(("Content-Length", str(len(data))))
    start_response(f"{status} {_reason(status)}", pairs)
    return [data]


def _send_head(
    start_response: StartResponse, status: int, headers: dict[str, Any], body: str | bytes
) -> list[bytes]:
    """The GET's status and headers (its Content-Length included), and no body."""
    _send(start_response, status, headers, body)
    return []


# Seconds a stopping server gives the requests it is running to finish.
STOP_GRACE = 5.0


class Server:
    """waitress around a WSGI app, started and stopped from code (any thread).

    `limits` bound what each connection may cost (local/http_limits.py); pass
    HttpLimits.from_settings(settings) so the server refuses an oversized body
    before buffering it, at the same limit the app applies. Requests `quick`
    picks are served on the loop thread that read them (local/inline_dispatch.py).
    """

    def __init__(
        self,
        wsgi_app: Callable[..., Iterable[bytes]],
        host: str = "127.0.0.1",
        port: int = 8000,
        threads: int = DEFAULT_THREADS,
        limits: HttpLimits | None = None,
        sock: socket.socket | None = None,
        quick: QuickRequest | None = None,
        tenant_of: TenantOf | None = None,
    ) -> None:
        """`tenant_of` names the tenant of a request's X-API-Key, for the pool's turns
        (local/fair_queue.py: per tenant; without it, per key). ValueError for a
        limit the pool cannot keep (SPOOL_HTTP_RESERVE_THREADS past --threads)."""
        limits = limits or HttpLimits()
        limits = dataclasses.replace(
            limits,
            max_body_bytes=min(limits.max_body_bytes, HARD_BODY_LIMIT),
            max_connections=fit_connections(limits.max_connections),
        )
        self.limits = limits
        adj = Adjustments(
            host=host,
            port=port,
            threads=threads,
            ident="spool",
            # Backstops only: GuardedParser refuses past limits.max_body_bytes.
            max_request_body_size=limits.max_body_bytes + 1,
            max_request_header_size=limits.max_header_bytes,
            connection_limit=limits.max_connections,
            channel_timeout=max(1, int(limits.idle_timeout)),
            expose_tracebacks=False,
            # The channel stays readable while its request runs, so a client that
            # hangs up is seen (environ["waitress.client_disconnected"]): one more
            # request may be read ahead meanwhile, not run.
            channel_request_lookahead=1,
        )
        reserve = limits.reserve_threads
        dispatcher = (
            TaskDispatcher(tenant_of, reserve)
            if quick is None
            else InlineTaskDispatcher(quick, tenant_of=tenant_of, reserve=reserve)
        )
        dispatcher.set_thread_count(threads)
        self._inline = dispatcher if isinstance(dispatcher, InlineTaskDispatcher) else None
        server_class, _ = guarded_classes(limits)

        def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
            # This request's long-polls answer at once when this server stops, or when
            # its client hangs up: a wait nobody reads held its slot (one of a tenant's
            # few) to the end, so a client could lock its tenant out of long-polls.
            gone: Callable[[], bool] | None = environ.get("waitress.client_disconnected")
            stopping = self._stopping
            serving_for(stopping if gone is None else (lambda: stopping() or gone()))
            return wsgi_app(environ, start_response)

        # `sock`: a listening socket made elsewhere (local/multiproc.py hands each
        # server process one of several bound to the same port).
        self._server: Any = server_class(
            app,
            map={},
            dispatcher=dispatcher,
            adj=adj,
            limits=limits,
            _sock=sock,
            bind_socket=sock is None,
        )
        # waitress logs "Task queue depth is N" whenever all threads are busy:
        # normal under load with keep-alive clients, noise on a terminal.
        logging.getLogger("waitress.queue").setLevel(logging.ERROR)
        # Plain attributes, not a threading.Event: stop() runs in signal handlers, and
        # Event.set takes a lock a second signal could find already held (a deadlock).
        self._stop_requested = False
        self._closed = False
        # When the loop last turned (it turns at least every sweep interval): a server
        # process beats to its supervisor only while this is recent (local/multiproc.py).
        self.last_turn = time.monotonic()
        self._stopped = threading.Event()

    def _stopping(self) -> bool:
        return self._stop_requested

    @property
    def host(self) -> str:
        return str(self._server.effective_host)

    @property
    def port(self) -> int:
        return int(self._server.effective_port)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def serve(self) -> None:
        """Serve until stop(); then finish running requests (up to 5 s) and close."""
        interval = self.limits.sweep_interval  # read once: the loop turns per event
        inline = self._inline
        if inline is not None:
            inline.own_loop()
            logs.outside_thread(
                inline.watch,
                args=(self._stopping, self._server._map, self._stop_accepting),
                name="spool-http-watchdog",
            ).start()
        try:
            while not self._stop_requested:
                self.last_turn = time.monotonic()
                wasyncore.loop(
                    timeout=interval,
                    map=self._server._map,
                    use_poll=True,
                    count=1,
                )
                if inline is not None:
                    inline.run_pending()
        finally:
            self._finish_running(STOP_GRACE)
            self._closed = True  # stop() no longer pulls the trigger close_all closes
            self._server.task_dispatcher.shutdown(cancel_pending=True, timeout=1)
            wasyncore.close_all(self._server._map)
            if inline is not None:
                inline.release_loop()
            self._stopped.set()

    def _stop_accepting(self) -> None:
        """Close the listening socket only (called by whichever thread owns the loop):
        waitress's own close also closes the trigger, which a request finishing now
        pulls (EBADF)."""
        with contextlib.suppress(OSError):
            wasyncore.dispatcher.close(self._server)

    def _finish_running(self, grace: float) -> None:
        """Let the requests running at stop finish and their answers go out, for up to
        `grace` seconds; long-polls are told to answer now (api/waits.py).

        The loop must keep turning meanwhile: a request's thread hands its answer to
        the loop, which sends it. Stopping the loop first and waiting only for the
        threads closed a long-poll's connection with no answer at all (curl: empty
        reply). New connections are no longer accepted."""
        server = self._server
        self._stop_accepting()  # nothing new is accepted
        dispatcher = server.task_dispatcher
        inline = self._inline
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            if inline is not None:
                inline.run_pending()
            with dispatcher.lock:
                busy = bool(dispatcher.queue) or dispatcher.active_count > 0
            unsent = any(
                getattr(channel, "total_outbufs_len", 0) for channel in server._map.values()
            )
            if not busy and not unsent:
                return
            wasyncore.loop(timeout=0.05, map=server._map, use_poll=True, count=1)

    def start(self) -> threading.Thread:
        thread = logs.outside_thread(self.serve, name="spool-http")
        thread.start()
        return thread

    def stop(self, wait: float | None = 10.0) -> None:
        """Ask the loop to stop and wait for it; from a signal handler interrupting
        serve() itself, pass wait=None (serve() cannot finish until it returns).

        With wait=None it takes no lock, so a signal handler may call it even while
        an earlier call is under way: a plain attribute, and one byte written to
        waitress's trigger pipe (pull_trigger without a thunk) to wake the loop."""
        self._stop_requested = True
        if not self._closed:
            with contextlib.suppress(OSError):  # closed by serve() meanwhile
                self._server.pull_trigger()
        if wait is not None:
            self._stopped.wait(wait)

"""Spool's Chalice app: thin shells over chalicelib/.

Each route hands the request to chalicelib.api.routes and turns its answer into
a Response; the event handlers hand their events to chalicelib.events. The
engine is imported on the first request, not here, so a cold start that only
loads this module stays cheap (`python -X importtime -c "import app"`).
"""

from __future__ import annotations

import os
import re
from base64 import b64decode
from typing import TYPE_CHECKING, Any

from chalice.app import Chalice, CloudWatchEvent, Rate, Response, SQSEvent

if TYPE_CHECKING:
    from collections.abc import Callable


_event_checks: Any = None


class SpoolChalice(Chalice):
    """Chalice, refusing with a 400 an API Gateway event its routes cannot read
    (chalicelib/api/gateway_event.py) instead of raising or answering 500 on it. Both
    checks run before chalice reads the event: a header or query value that is not a
    string once reached a route, which raised on it (an ERROR with a traceback for a
    client's mistake) or stored the job it came with. So does the refusal of a header
    line `spool serve`'s server refuses (a value holding a control character, a name
    that is no token), in its words."""

    def __call__(self, event: Any, context: Any) -> dict[str, Any]:
        answer = self._answer(event, context)
        if _is_head(event):
            # HEAD is GET without the body (RFC 9110 9.3.2), as `spool serve` answers
            # it: the GET's status and headers. Every GET route takes HEAD (GET
            # below), so API Gateway hands it to this function instead of its 404.
            answer = {**answer, "body": "", "isBase64Encoded": False}
        return answer

    def _answer(self, event: Any, context: Any) -> dict[str, Any]:
        checks = _event_checks or _load_event_checks()
        why = checks.shape_problem(event, self.routes) or checks.value_problem(event)
        if why is not None:
            refused: dict[str, Any] = _refusal(why).to_dict(self.api.binary_types)
            return refused
        if checks.malformed_headers(event):
            invalid: dict[str, Any] = _invalid_header(event).to_dict(self.api.binary_types)
            return invalid
        path = checks.control_in_path(event)
        if path is not None:
            lost: dict[str, Any] = _no_route(event, path).to_dict(self.api.binary_types)
            return lost
        answer: dict[str, Any] = super().__call__(event, context)
        return answer


def _load_event_checks() -> Any:
    global _event_checks
    if _event_checks is None:
        from chalicelib.api import gateway_event

        _event_checks = gateway_event
    return _event_checks


def _refusal(why: str) -> Response:
    """The 400 an event no route can read gets (gateway_event says why)."""
    from chalicelib.api.errors import error_body, log
    from chalicelib.api.http import API_HEADERS, dumps

    log.warning("refused a Lambda event: %s", why)
    headers: dict[str, str | list[str]] = {**API_HEADERS, "Content-Type": "application/json"}
    return Response(dumps(error_body("bad_request", why)), headers, status_code=400)


def _invalid_header(event: dict[str, Any]) -> Response:
    """The 400 of a header value holding a control character or a name that is no
    token, in `spool serve`'s words (http.INVALID_HEADER), before chalice or a route
    reads a header: no key is checked, so no failed sign-in is counted. A client's
    request, not a malformed event: logged as any answered request is (one INFO
    line), not as a refused event's WARNING."""
    from chalicelib.api.http import INVALID_HEADER

    method = event["requestContext"]["httpMethod"]
    return _answered_early(event, method, 400, "bad_request", INVALID_HEADER)


def _no_route(event: dict[str, Any], path: str) -> Response:
    """The 404 of a path holding a control character, in `spool serve`'s words, before
    a route reads the id (it looked the job up: `job not found`)."""
    from chalicelib.api.http import CONTROL_IN_PATH, no_route, shown_path

    method = event["requestContext"]["httpMethod"]
    method = "GET" if method == "HEAD" else method
    message = no_route(method, shown_path(path), CONTROL_IN_PATH)
    return _answered_early(event, method, 404, "not_found", message)


def _answered_early(
    event: dict[str, Any], method: str, status: int, code: str, message: str
) -> Response:
    """A client's request answered before chalice reads it: logged as any answered
    request is (one INFO line), with every answer's headers (the dashboard's too under
    /ui, as on its other errors)."""
    from chalicelib import logs
    from chalicelib.api.errors import error_body
    from chalicelib.api.http import API_HEADERS, dumps, with_ui_headers

    route = event["requestContext"]["resourcePath"]
    logs.http_request(method, route, status, 0.0, None)
    plain: dict[str, str | list[str]] = {**API_HEADERS, "Content-Type": "application/json"}
    headers = with_ui_headers(route, plain)
    return Response(dumps(error_body(code, message)), headers, status_code=status)


def _is_head(event: Any) -> bool:
    """Whether a Lambda event is an API Gateway HEAD request (where chalice reads the
    method: requestContext.httpMethod)."""
    if not isinstance(event, dict):
        return False
    context = event.get("requestContext")
    return isinstance(context, dict) and context.get("httpMethod") == "HEAD"


# configure_logs=False: Chalice would give the "spool" logger a stdout handler of its own
# and stop it propagating, swallowing every spool.* line; chalicelib/logs.py sets up logging.
app = SpoolChalice(app_name="spool", configure_logs=False)

# `chalice local` refuses a misspelt SPOOL_* variable, and a setting the HTTP edge
# refuses (a malformed SPOOL_API_KEYS), as `spool serve` does, and reads a repeated
# X-API-Key and Content-Length as it does (chalicelib/chalice_local_http.py). Only when the chalice
# command line loads this file: on Lambda (no AWS_CHALICE_CLI_MODE) this is one
# environment lookup, and the settings catalog is never imported.
if os.environ.get("AWS_CHALICE_CLI_MODE") and not os.environ.get("AWS_LAMBDA_FUNCTION_NAME"):
    from chalicelib.settings_catalog import refuse_under_chalice_local

    if refuse_under_chalice_local(os.environ):
        # chalice's own server, made to read a request's head as `spool serve` does.
        from chalicelib.chalice_local_http import install

        install(os.environ)

# Spool parses bodies itself, so any content type reaches the route and a bad
# body gets Spool's error shape instead of Chalice's 415. A GET carries no body:
# its Content-Type means nothing (a probe sending text/plain got 415 from /health).
ANY = ["*/*"]
# The methods of a route that reads: GET, and HEAD, which SpoolChalice answers as GET
# without the body. Without HEAD here API Gateway had no HEAD method on the resource and
# answered a load balancer's `HEAD /health` 404, where `spool serve` answers 200.
GET = ["GET", "HEAD"]
JOBS_QUEUE = os.environ.get("SPOOL_SQS_QUEUE") or "spool-jobs"


# The engine's modules, imported by the first request (not by `import app`) and kept:
# an import statement in _handle cost about 8k instructions a request even with the
# module loaded (docs/benchmarks.md, stop 40).
_engine: Any = None


def _load_engine() -> Any:
    global _engine
    if _engine is None:
        from chalicelib.api import http, routes

        _engine = (http, routes.handle)
    return _engine


def _handle(operation: str, **params: str) -> Response:
    http, handle = _engine or _load_engine()
    request = app.current_request
    assert request is not None
    event = request.to_original_event()
    body, body_error = _body(request, event)
    headers = request.headers
    checks = _event_checks or _load_event_checks()
    try:
        repeated, plain = checks.repeated_headers(event, _plain(headers))
    except checks.BadEvent as exc:
        return _refusal(str(exc))
    except checks.InvalidHeader:  # in multiValueHeaders; _answer checked `headers`
        return _invalid_header(event)
    result = handle(
        operation,
        http.ApiRequest(
            headers=plain,
            query=request.query_params or {},
            body=body,
            base_path=_base_path(request.context, event.get("path")),
            client=_client_address(http, request.context, headers),
            body_error=body_error,
            repeated=repeated,
        ),
        **params,
    )
    return Response(
        body=result.body, status_code=result.status, headers={**http.API_HEADERS, **result.headers}
    )


def _plain(headers: Any) -> Any:
    """The request's headers as a dict of lower-case names, when chalice keeps one: every
    lookup the routes make (ApiRequest.header) is by a lower-case name, which such a dict
    answers as chalice's CaseInsensitiveMapping does, without a Python call per lookup."""
    lowered = getattr(headers, "_dict", None)
    return lowered if type(lowered) is dict else headers


def _client_address(http: Any, context: dict[str, Any], headers: Any) -> str:
    """Who is calling: API Gateway's sourceIp, or, under `spool serve` and `chalice
    local` (whose gateways always say 127.0.0.1), the socket's peer that server put
    in a header of its own, replacing whatever a client sent under that name."""
    if http.PEER_HEADER_TRUSTED:
        peer = headers.get(http.PEER_HEADER)
        if peer:
            return str(peer)
    identity = context.get("identity") or {}
    return str(identity.get("sourceIp") or "")


def _body(request: Any, event: dict[str, Any]) -> tuple[bytes, str | None]:
    """The body's bytes, or why there are none. A body the event marks isBase64Encoded
    is decoded strictly: chalice's b64decode drops every character outside the
    alphabet, so "!!!" read as an empty body and junk around a valid body was ignored."""
    if event.get("isBase64Encoded"):
        given = event.get("body")
        try:
            return (b64decode(given, validate=True) if given is not None else b""), None
        except ValueError:  # binascii.Error, or a str holding more than ASCII
            return b"", "the request body is marked base64-encoded but is not valid base64"
    try:
        raw = request.raw_body or b""
    except UnicodeError:  # a text body holding a lone surrogate: no UTF-8 spells it
        return b"", "request body is not UTF-8: send JSON encoded as UTF-8"
    return (raw.encode("utf-8") if isinstance(raw, str) else raw), None


# A stage name or a custom domain's base path mapping: non-empty segments of what API
# Gateway lets either hold (letters, digits and $-_.+!*'()).
_BASE_PATH = re.compile(r"(?:/[A-Za-z0-9$\-_.+!*'()]+)+")


def _base_path(context: dict[str, Any], route_path: str | None) -> str:
    """What the URL the client used has before the route's own path, so links work
    behind it: the stage on execute-api URLs ("/api"), or a custom domain's base path
    mapping ("/v1"). API Gateway's requestContext.path is the whole path the client
    sent; the event's own path is the route's. A prefix no stage or mapping could be
    is not echoed into status_url and Location: "//evil.example" linked to another
    host, a space or a line break made an invalid header value."""
    path = str(context.get("path", ""))
    stage = context.get("stage")
    if route_path and path.endswith(route_path) and len(path) > len(route_path):
        prefix = path[: -len(route_path)]
        if _BASE_PATH.fullmatch(prefix):
            return prefix
    if stage and path.startswith(f"/{stage}/") and _BASE_PATH.fullmatch(f"/{stage}"):
        return f"/{stage}"
    return ""


@app.middleware("http")
def spool_error_shape(event: Any, get_response: Callable[[Any], Response]) -> Response:
    """Chalice answers some requests itself (405, a crashed view); give those our shape."""
    response = get_response(event)
    if response.status_code >= 400 and isinstance(response.body, dict):
        from chalicelib.api.errors import reshape_gateway_error
        from chalicelib.api.http import dumps

        shaped = reshape_gateway_error(response.status_code, response.body)
        if shaped is not None:
            from chalicelib.api.http import API_HEADERS, with_ui_headers

            response.body = dumps(shaped)
            # The headers every answer of the API carries (never cached, never sniffed).
            response.headers = {
                **API_HEADERS,
                **response.headers,
                "Content-Type": "application/json",
            }
            # Under /ui the dashboard's own headers too, as on its errors.
            response.headers = with_ui_headers(str(event.path), response.headers)
    return response


@app.route("/enqueue", methods=["POST"], content_types=ANY)
def enqueue() -> Response:
    return _handle("enqueue")


@app.route("/status/{id}", methods=GET, content_types=ANY)
def status(id: str) -> Response:
    return _handle("status", job_id=id)


@app.route("/jobs", methods=GET, content_types=ANY)
def list_jobs() -> Response:
    return _handle("list_jobs")


@app.route("/jobs/{id}/cancel", methods=["POST"], content_types=ANY)
def cancel(id: str) -> Response:
    return _handle("cancel", job_id=id)


@app.route("/dlq", methods=GET, content_types=ANY)
def dlq() -> Response:
    return _handle("dlq")


@app.route("/dlq/{id}/redrive", methods=["POST"], content_types=ANY)
def redrive(id: str) -> Response:
    return _handle("redrive", job_id=id)


@app.route("/dlq/redrive", methods=["POST"], content_types=ANY)
def redrive_all() -> Response:
    return _handle("redrive_all")


@app.route("/health", methods=GET, content_types=ANY)
def health() -> Response:
    return _handle("health")


@app.route("/metrics", methods=GET, content_types=ANY)
def metrics() -> Response:
    return _handle("metrics")


@app.route("/openapi.json", methods=GET, content_types=ANY)
def openapi() -> Response:
    return _handle("openapi")


# The dashboard (chalicelib/ui/, docs/dashboard.md): a page, its files, its JSON.
@app.route("/ui", methods=GET, content_types=ANY)
def ui_page() -> Response:
    # "/ui/" reaches this route too; the page's relative URLs need "/ui" (a redirect).
    request = app.current_request
    path = str(request.context.get("path", "")) if request is not None else ""
    return _handle("ui_page", slash="/" if path.endswith("/") else "")


@app.route("/ui/static/{name}", methods=GET, content_types=ANY)
def ui_static(name: str) -> Response:
    return _handle("ui_static", name=name)


@app.route("/ui/api/overview", methods=GET, content_types=ANY)
def ui_overview() -> Response:
    return _handle("ui_overview")


@app.route("/ui/api/jobs", methods=GET, content_types=ANY)
def ui_jobs() -> Response:
    return _handle("ui_jobs")


@app.route("/ui/api/jobs/{id}", methods=GET, content_types=ANY)
def ui_job(id: str) -> Response:
    return _handle("ui_job", job_id=id)


@app.route("/ui/api/jobs/{id}/cancel", methods=["POST"], content_types=ANY)
def ui_cancel(id: str) -> Response:
    return _handle("ui_cancel", job_id=id)


@app.route("/ui/api/jobs/{id}/redrive", methods=["POST"], content_types=ANY)
def ui_redrive(id: str) -> Response:
    return _handle("ui_redrive", job_id=id)


@app.route("/ui/api/dead/redrive", methods=["POST"], content_types=ANY)
def ui_dead_redrive() -> Response:
    return _handle("ui_dead_redrive")


@app.route("/ui/api/dead/purge", methods=["POST"], content_types=ANY)
def ui_dead_purge() -> Response:
    return _handle("ui_dead_purge")


@app.route("/ui/api/schedules", methods=GET, content_types=ANY)
def ui_schedules() -> Response:
    return _handle("ui_schedules")


@app.on_sqs_message(queue=JOBS_QUEUE, batch_size=10)
def run_jobs(event: SQSEvent) -> dict[str, Any]:
    from chalicelib import events

    return events.handle_sqs(event.to_dict(), event.context)  # type: ignore[arg-type]


class _AnyScheduleEvent(CloudWatchEvent):
    """The scheduled function's event as chalice hands it on, whatever it holds: chalice's
    CloudWatchEvent reads nine keys with event[...], so an invocation by hand ({} or the
    console's test event) was a KeyError, a Lambda error with a traceback, before
    handle_schedule, which reads none of them and warns of such an event itself."""

    def _extract_attributes(self, event_dict: Any) -> None:
        given = event_dict if isinstance(event_dict, dict) else {}
        self.version = given.get("version", "")
        self.account = given.get("account", "")
        self.region = given.get("region", "")
        self.detail = given.get("detail") or {}
        self.detail_type = given.get("detail-type", "")
        self.source = given.get("source", "")
        self.time = given.get("time", "")
        self.event_id = given.get("id", "")
        self.resources = given.get("resources") or []


@app.schedule(Rate(1, unit=Rate.MINUTES))
def drain_due(event: CloudWatchEvent) -> dict[str, Any]:
    from chalicelib import events

    return events.handle_schedule(event.to_dict(), event.context)  # type: ignore[arg-type]


drain_due.event_class = _AnyScheduleEvent  # type: ignore[attr-defined]

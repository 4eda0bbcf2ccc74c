"""`spool serve`'s call into app.py's views, without chalice's per-request scaffolding.

`spool serve` used to hand each request to chalice's LocalGateway, which makes a
LambdaContext (a uuid4), runs the authorizer lookup, builds a RestAPIEventHandler
and its middleware chain, checks the request's Content-Type against the route's
types, wraps the response's headers in a CaseInsensitiveMapping to check them
against the binary types, and turns the Response into the dict Lambda returns,
which the server then read back: about 330k instructions of a single enqueue's
1.17M (docs/benchmarks.md, stop 40). Here the same registered view runs on the
same event, under the same chalice Request, inside the same middleware chain and
chalice's own error handling; only the steps that cannot change this app's answer
are skipped, each for a reason that holds by construction:

- no authorizer, no CORS, content types `*/*`: a route that has any of these is
  not taken here (the gateway answers it), so the authorizer lookup finds nothing,
  no CORS header is added, and the Content-Type check always passes;
- the LambdaContext: app.py's views never read `app.lambda_context`, and the
  request's `lambda_context` is left None (Request.to_dict never carries it);
- the binary checks: whether a Content-Type is binary is chalice's own
  `_matches_content_type` against the app's binary types, remembered per value,
  and a response that is binary goes through chalice's full check and to_dict;
- the Response's dict: a str or bytes body that is not binary is sent as it is,
  with its headers in the order to_dict and the server's merge gave them.

What the gateway answers itself (no route: 404, a method the route lacks: 405,
routes with an authorizer or CORS) still goes through it: answer() returns None.
tests/test_direct_dispatch.py sends the same requests over real sockets to a
server on each path and compares every answer byte for byte. chalice local and
Lambda keep chalice's path; so does anything built on `ChaliceWSGI(direct=False)`.
"""

from __future__ import annotations

import base64
import threading
from collections.abc import Callable
from typing import Any, NamedTuple

from chalice.app import (
    CaseInsensitiveMapping,
    Chalice,
    MultiDict,
    Request,
    Response,
    RestAPIEventHandler,
    RouteEntry,
    _matches_content_type,
    error_response,
)
from chalice.local import MatchResult, RouteMatcher

# (method, path, headers, body, the matched route) -> the event chalice's converter makes,
# its header names all lower-case (as that converter's are; lowered_request counts on it)
EventFor = Callable[[str, str, dict[str, str], "bytes | None", MatchResult], dict[str, Any]]


_REMEMBERED = 256


class Answer(NamedTuple):
    """What the server sends: the status, headers (lists for repeated ones), body."""

    status: int
    headers: dict[str, Any]
    body: str | bytes


def _direct(entry: RouteEntry) -> bool:
    """A route whose answer chalice's skipped steps could not change (module doc)."""
    types = [t.lower() for t in entry.content_types or ()]
    return entry.authorizer is None and entry.cors is None and "*/*" in types


class DirectDispatch:
    """Runs a request's view the way Chalice.__call__ would, minus the scaffolding."""

    def __init__(self, app: Chalice, matcher: RouteMatcher, event_for: EventFor) -> None:
        self._app = app
        self._matcher = matcher
        self._event_for = event_for
        # Read once: app.py sets none of its own (chalice's defaults); a view module
        # that added some after the server was built would not be seen here.
        self._binary_types = list(app.api.binary_types)
        self._entries = {
            (path, method): entry
            for path, methods in app.routes.items()
            for method, entry in methods.items()
            if _direct(entry)
        }
        # Remembered answers: whether a Content-Type is binary, and which name in a
        # response's headers holds it (a view could make up new ones: bounded).
        self._binary: dict[str, bool] = {}
        self._typed_by: dict[tuple[str, ...], str] = {}
        # app.py registers its middleware when it is imported, before a server is built.
        self._middleware = list(app._get_middleware_handlers("http"))
        self._local = threading.local()  # each thread's _ViewHandler
        # No Content-Type: chalice's Accept check reads "application/json", to_dict "".
        self._untyped = self._is_binary("application/json") or self._is_binary("")

    def answer(
        self, method: str, path: str, headers: dict[str, str], body: bytes | None
    ) -> Answer | None:
        """The view's answer, or None when the gateway must answer (no route, a
        method the route lacks, a route this path does not take)."""
        try:
            match = self._matcher.match_route(path)
        except ValueError:
            return None
        entry = self._entries.get((match.route, method))
        if entry is None:
            return None
        event = self._event_for(method, path, headers, body, match)
        return self._respond(self._call(entry, event))

    def _call(self, entry: RouteEntry, event: dict[str, Any]) -> Response:
        """Chalice.__call__ and RestAPIEventHandler.__call__ for this route: the same
        request object, middleware (app.py's spool_error_shape) around the view, and
        chalice's own handling of a view that raises (500) or sets a bad header."""
        request = lowered_request(event)
        self._app.current_request = request  # per thread: make_thread_safe
        handler = self._local.__dict__.get("handler")
        if handler is None:
            handler = self._local.handler = _ViewHandler(self._app, self._middleware, self)
        parameters = event["pathParameters"]
        handler.current_request = request
        handler.view = entry.view_function
        handler.args = {name: parameters[name] for name in entry.view_args}
        try:
            response: Response = handler.chain(request)
        finally:
            handler.current_request = handler.view = None
            handler.args = {}
        return response

    def _respond(self, response: Response) -> Answer:
        """What Response.to_dict and the server's reading of it give."""
        body = response.body
        if not isinstance(body, (str, bytes)) or self._maybe_binary(response.headers):
            shaped = response.to_dict(self._binary_types)
            out: dict[str, Any] = dict(shaped["headers"])
            out.update(shaped["multiValueHeaders"])
            raw = shaped["body"]
            if shaped.get("isBase64Encoded") and raw is not None:
                raw = base64.b64decode(raw)
            return Answer(int(shaped["statusCode"]), out, raw or b"")
        headers = response.headers
        for value in headers.values():  # a loop: a generator in any() cost a frame
            if isinstance(value, list):
                # to_dict's single headers first, then the repeated ones
                headers = {
                    **{k: v for k, v in headers.items() if not isinstance(v, list)},
                    **{k: v for k, v in headers.items() if isinstance(v, list)},
                }
                break
        return Answer(int(response.status_code), headers, body or b"")

    def _maybe_binary(self, headers: dict[str, Any]) -> bool:
        """Could chalice find these response headers binary? True unless the last
        Content-Type (as CaseInsensitiveMapping keeps it) is a text value it does not
        match against the binary types; anything else takes chalice's full check."""
        names = tuple(headers)
        name = self._typed_by.get(names)
        if name is None:  # which of these names is the Content-Type ("": none)
            name = ""
            for each in names:
                if each.lower() == "content-type":
                    name = each
            if len(self._typed_by) < _REMEMBERED:
                self._typed_by[names] = name
        if not name:
            return self._untyped
        content_type = headers[name]
        if type(content_type) is not str:
            return True
        return self._is_binary(content_type)

    def _is_binary(self, content_type: str) -> bool:
        known = self._binary.get(content_type)
        if known is None:
            known = _matches_content_type(content_type, self._binary_types)
            if len(self._binary) < _REMEMBERED:
                self._binary[content_type] = known
        return known


_new = object.__new__


def lowered_request(event: dict[str, Any]) -> Request:
    """chalice's Request(event), for an event whose header names are all lower-case
    (what EventFor gives): the same object, attribute for attribute, without
    CaseInsensitiveMapping lower-casing every name again (a comprehension and a call
    per header). tests/test_lowered_request.py compares the two over many events, so a
    chalice that adds or changes an attribute is caught there."""
    request: Request = _new(Request)
    headers: CaseInsensitiveMapping = _new(CaseInsensitiveMapping)
    headers._dict = dict(event["headers"])  # a copy, as chalice's is
    query = event["multiValueQueryStringParameters"]
    context = event["requestContext"]
    request.__dict__.update(
        query_params=None if query is None else MultiDict(query),
        headers=headers,
        uri_params=event["pathParameters"],
        method=context["httpMethod"],
        _is_base64_encoded=event.get("isBase64Encoded", False),
        _body=event["body"],
        _json_body=None,
        _raw_body=b"",
        context=context,
        stage_vars=event["stageVariables"],
        path=context["resourcePath"],
        lambda_context=None,
        _event_dict=event,
    )
    return request


class _ViewHandler(RestAPIEventHandler):
    """chalice's handler for one thread's requests, its middleware chain built once:
    chalice's error handler, then the app's middleware, around the view it is given
    (`view`, `args`), whose call is chalice's own (_get_view_function_response) and
    whose response goes through chalice's Accept check when it may be binary."""

    def __init__(self, app: Chalice, middleware: list[Any], dispatch: DirectDispatch) -> None:
        super().__init__(app.routes, app.api, app.log, app.debug, middleware_handlers=middleware)
        self._dispatch = dispatch
        self.view: Callable[..., Any] | None = None
        self.args: dict[str, str] = {}
        self.chain = self._build_middleware_handlers(
            [self._global_error_handler, *middleware], original_handler=self._run
        )

    def _run(self, request: Request) -> Response:
        assert self.view is not None
        response = self._get_view_function_response(self.view, self.args)
        if self._dispatch._maybe_binary(response.headers) and not self._validate_binary_response(
            request.headers, CaseInsensitiveMapping(response.headers)
        ):
            content_type = CaseInsensitiveMapping(response.headers).get("content-type", "")
            return error_response(  # chalice's words, as _main_rest_api_handler's
                error_code="BadRequest",
                message=(
                    f"Request did not specify an Accept header with {content_type}, "
                    f"The response has a Content-Type of {content_type}. If a "
                    "response has a binary Content-Type then the request "
                    "must specify an Accept header that matches."
                ),
                http_status_code=400,
                headers=None,
            )
        return response

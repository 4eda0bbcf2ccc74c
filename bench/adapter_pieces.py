"""A single enqueue's way through `spool serve`'s adapter, in instructions, piece by piece.

    PYTHONPATH=. .venv/bin/python -m bench.adapter_pieces --n 200

bench/http_instructions.py counts the whole request, and "chalice dispatch + adapter"
as the WSGI call less Spool's route; this counts that remainder's pieces, each called
alone N times after a warm-up between callgrind's zero and dump
(bench/callgrind_marks.py), on the same app, store and request as that bench: the
environ read into headers and a path, the route matched, the event built, chalice's
Request, the middleware chain around a view that answers at once, app.py's shell
around Spool's route, the Response read back and the answer's header pairs. Run it
on two trees (copy the file into the older one) to see what a change moved.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import callgrind_marks

WARMUP = 50


def _phases(workdir: Path) -> dict[str, Callable[[], Any]]:
    from bench.http_instructions import JOB, _environ, _ignore, app_settings

    app_settings(workdir)
    from chalice.app import Request, Response

    import app as spool_app
    from chalicelib.api import http
    from local import direct_dispatch, server

    wsgi = server.ChaliceWSGI(spool_app.app)
    wsgi(_environ("POST", "/enqueue", JOB), _ignore)
    direct = wsgi.direct
    assert direct is not None
    environ = _environ("POST", "/enqueue", JOB)
    headers = server._headers(environ)
    match = wsgi.gateway.routes.match_route("/enqueue")
    event = wsgi.gateway.converter.event_for(
        "POST", "/enqueue", server._LowerHeaders(headers), JOB, match
    )
    answered = http.ApiResponse(201, '{"id": "x"}', {"Content-Type": "application/json"})
    response = Response(
        body=answered.body, status_code=201, headers={**http.API_HEADERS, **answered.headers}
    )
    answer = direct._respond(response)
    entry = direct._entries[("/enqueue", "POST")]
    make_request = getattr(direct_dispatch, "lowered_request", Request)

    def quick_view() -> Response:
        return response

    def chain() -> Any:  # _call with a view that answers at once
        saved = entry.view_function
        entry.view_function = quick_view
        try:
            return direct._call(entry, event)
        finally:
            entry.view_function = saved

    request = Request(event)
    quick_engine = (http, lambda *args, **params: answered)

    def shell() -> Any:  # app.py's _handle around a route that answers at once
        spool_app.app.current_request = request
        saved = spool_app._engine
        spool_app._engine = quick_engine
        try:
            return spool_app._handle("enqueue")
        finally:
            spool_app._engine = saved

    return {
        "empty": lambda: None,
        "enqueue_wsgi_call": lambda: wsgi(_environ("POST", "/enqueue", JOB), _ignore),
        "environ": lambda: _environ("POST", "/enqueue", JOB),  # the bench's own, taken off
        "headers": lambda: server._headers(environ),
        "path": lambda: server._path(environ),
        "match_route": lambda: wsgi.gateway.routes.match_route("/enqueue"),
        # a fresh copy of _headers' dict, its type kept (event_for pops a name from it)
        "event": lambda: wsgi.gateway.converter.event_for(
            "POST", "/enqueue", server._LowerHeaders(headers), JOB, match
        ),
        # the Request the served path builds (chalice's own before lowered_request)
        "request": lambda: make_request(event),
        "chain_quick_view": chain,
        "shell_quick_route": shell,
        "respond": lambda: direct._respond(response),
        "send": lambda: server._send(_ignore, answer.status, answer.headers, answer.body),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=200, help="calls per piece")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        phases = _phases(Path(tempfile.mkdtemp(prefix="spool-adapter-pieces-")))
        callgrind_marks.count_phases(phases, args.n, WARMUP, freeze_heap=True)
        return 0
    counts = callgrind_marks.run_child(
        "bench.adapter_pieces", ["--n", str(args.n)], None, expect="enqueue_wsgi_call"
    )
    each = callgrind_marks.per_request(counts, args.n)
    print(f"instructions per call (callgrind, {args.n} calls a piece, after warm-up)")
    for name, count in each.items():
        print(f"{name:<24} {count:>10,.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

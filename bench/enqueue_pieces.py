"""The single enqueue's route taken apart, in instructions (callgrind), piece by piece.

    PYTHONPATH=. .venv/bin/python -m bench.enqueue_pieces --n 200

bench/http_instructions.py counts the whole request and its five large parts; this
counts the pieces of the route each stop-42 cut touched, each called alone N times
after a warm-up between callgrind's zero and dump (bench/callgrind_marks.py), on the
same app, store and request as that bench. Run it on two trees (copy the file into
the older one) to see what each cut moved. Pieces a tree lacks are counted through
what stood in their place (the answer body: http.dumps before enqueued_json).
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
VIEW = {
    "id": "j_0190000000000000000000000000000a",
    "state": "queued",
    "status_url": "/status/j_0190000000000000000000000000000a",
    "created": True,
}


def _phases(workdir: Path) -> dict[str, Callable[[], Any]]:
    from bench.http_instructions import JOB, _environ, _ignore, app_settings

    app_settings(workdir)
    import app as spool_app
    from chalicelib.api import routes
    from chalicelib.api.http import ApiRequest, dumps
    from chalicelib.ids import new_job_ids
    from chalicelib.jsonstrict import is_finite_json
    from local.server import ChaliceWSGI

    wsgi = ChaliceWSGI(spool_app.app)
    wsgi(_environ("POST", "/enqueue", JOB), _ignore)
    edge = routes.current()
    headers = {"x-api-key": "k-0123456789abcdef", "content-type": "application/json"}
    request = ApiRequest(headers=headers, body=JOB, client="127.0.0.1")
    data = request.json(edge.settings.max_body_bytes)
    jobs, _ = edge._enqueue_requests(data)
    answer_body = getattr(routes, "enqueued_json", dumps)
    return {
        "empty": lambda: None,
        "enqueue_wsgi_call": lambda: wsgi(_environ("POST", "/enqueue", JOB), _ignore),
        "query_read": lambda: routes._read_query(edge, "enqueue", request),
        "tenant_key_check": lambda: edge.tenant(request),
        "body_decode": lambda: request.json(edge.settings.max_body_bytes),
        "validation_checks": lambda: edge._enqueue_requests(data),
        "prepare_build_ids": lambda: edge.service.prepare(jobs, "t"),
        "build": lambda: edge.service.build(jobs[0], "t", str(VIEW["id"])),
        "ids": lambda: new_job_ids(1),
        "is_finite_json": lambda: is_finite_json({"n": 1}),
        "answer_body": lambda: answer_body(VIEW),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=200, help="calls per piece")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        phases = _phases(Path(tempfile.mkdtemp(prefix="spool-enqueue-pieces-")))
        callgrind_marks.count_phases(phases, args.n, WARMUP, freeze_heap=True)
        return 0
    counts = callgrind_marks.run_child(
        "bench.enqueue_pieces", ["--n", str(args.n)], None, expect="ids"
    )
    print(f"instructions per call (callgrind, {args.n} calls a piece, after warm-up)")
    for name, value in callgrind_marks.per_request(counts, args.n).items():
        print(f"{name:28} {value:12,.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

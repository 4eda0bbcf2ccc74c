"""Where one HTTP request's time goes inside `spool serve`, without the socket.

    python -m bench.http_profile [--n 5000] [--pyinstrument enqueue|batch|cached]

Drives the WSGI app `spool serve` runs (local/server.py ChaliceWSGI over app.py)
in one thread on a fresh SQLite file, and times each layer on its own, in
microseconds per request: the whole WSGI call; chalice (LocalGateway's event
and app.py's Chalice dispatch) as the WSGI call less chalicelib's `handle`;
Spool's route (`routes.handle`) with and without its log line; the store's
add alone. Each figure is the best of 5 runs. With --pyinstrument it prints
that scenario's call tree instead. The socket and waitress's own cost per
request is what bench/http_bench.py's floor server measures.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import os
import sys
import tempfile
import time
import timeit
from collections.abc import Callable
from pathlib import Path
from typing import Any

JOB = b'{"type": "echo", "payload": {"n": 1}}'
BATCH = json.dumps({"jobs": [{"type": "echo", "payload": {"n": i}} for i in range(100)]}).encode()


def _environ(method: str, path: str, body: bytes = b"") -> dict[str, Any]:
    return {
        "REQUEST_METHOD": method,
        "PATH_INFO": path,
        "QUERY_STRING": "",
        "HTTP_X_API_KEY": "k-0123456789abcdef",
        "CONTENT_TYPE": "application/json",
        "CONTENT_LENGTH": str(len(body)),
        "wsgi.input": io.BytesIO(body),
    }


def _per_call(fn: Callable[[], Any], n: int, repeat: int = 5) -> float:
    """Microseconds per call: the best of `repeat` runs (a shared machine only adds time)."""
    fn()
    each = max(1, n // repeat)
    return min(timeit.repeat(fn, number=each, repeat=repeat)) / each * 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=5000, help="calls per figure")
    parser.add_argument("--pyinstrument", choices=["enqueue", "batch", "cached"])
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="spool-http-profile-"))
    os.environ.update(
        SPOOL_API_KEYS="k-0123456789abcdef=t",
        SPOOL_STORE_URL=f"sqlite:///{workdir}/profile.db",
        SPOOL_DEMO_HANDLERS="true",
    )
    from chalicelib import logs, runtime
    from chalicelib.api import routes
    from chalicelib.api.http import ApiRequest

    # Lines are formatted and written as `spool serve` does, to a sink instead of a terminal.
    logs.configure(default_level="INFO", stream=open(os.devnull, "w"))  # noqa: SIM115
    import app as spool_app
    from local.server import ChaliceWSGI

    rt = runtime.current()
    wsgi = ChaliceWSGI(spool_app.app)

    def ignore(status: str, headers: list[tuple[str, str]]) -> None:
        pass

    done = json.loads(b"".join(wsgi(_environ("POST", "/enqueue", JOB), ignore)))["id"]
    rt.worker().drain(time.time() + 5)
    calls: dict[str, Callable[[], Any]] = {
        "enqueue": lambda: wsgi(_environ("POST", "/enqueue", JOB), ignore),
        "batch": lambda: wsgi(_environ("POST", "/enqueue", BATCH), ignore),
        "cached": lambda: wsgi(_environ("GET", f"/status/{done}"), ignore),
    }
    if args.pyinstrument:
        from pyinstrument import Profiler

        profiler = Profiler(interval=0.0002)
        with profiler:
            for _ in range(args.n):
                calls[args.pyinstrument]()
        print(profiler.output_text(color=False, show_all=False))
        return 0

    headers = {"x-api-key": "k-0123456789abcdef", "content-type": "application/json"}
    http_log = logging.getLogger("spool.http")
    jobs_log = logging.getLogger("spool.jobs")
    n = args.n
    rows: list[tuple[str, float, float, float]] = []
    for name, body, op, params in (
        ("POST /enqueue (one job)", JOB, "enqueue", {}),
        ("POST /enqueue (batch of 100)", BATCH, "enqueue", {}),
        ("GET /status (cache hit)", b"", "status", {"job_id": done}),
    ):
        count = max(1, n // 100) if body is BATCH else n
        total = _per_call(calls[{JOB: "enqueue", BATCH: "batch"}.get(body, "cached")], count)
        request = ApiRequest(headers=headers, query={}, body=body)

        def route_call(op: str = op, request: ApiRequest = request, params: Any = params) -> Any:
            return routes.handle(op, request, **params)

        route = _per_call(route_call, count)
        http_log.disabled = jobs_log.disabled = True
        quiet = _per_call(route_call, count)
        http_log.disabled = jobs_log.disabled = False
        rows.append((name, total, route, quiet))
    from chalicelib.ids import new_job_id
    from chalicelib.models import NewJob

    def add_one() -> Any:
        job = NewJob(id=new_job_id(), type="echo", payload={"n": 1}, run_at=rt.store.clock.now())
        return rt.store.add([job])

    store_add = _per_call(add_one, n)
    print(f"{'request':30} {'WSGI call':>10} {'chalice':>8} {'route':>8} {'logging':>8}")
    for name, total, route, quiet in rows:
        print(f"{name:30} {total:10.1f} {total - route:8.1f} {quiet:8.1f} {route - quiet:8.1f}")
    print(f"store.add of one job alone: {store_add:.1f} us (inside the enqueue route above)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

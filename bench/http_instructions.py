"""One HTTP request's cost in `spool serve`, counted in instructions, beside its floor.

    PYTHONPATH=. .venv/bin/python -m bench.http_instructions --n 200

The machine is shared and its speed moves by tens of percent from hour to hour, so
this counts instructions (valgrind's callgrind), which the neighbours do not change.
It runs itself again under `valgrind --tool=callgrind --instr-atstart=no`; that
child drives the WSGI app `spool serve` serves (local/server.py ChaliceWSGI over
app.py, on a fresh SQLite file, as bench/http_profile.py does, without the socket)
and bench/http_floor.py's FloorApp, warms each up, then runs each phase N times
between a zero and a dump of callgrind's counts (bench/callgrind_marks.py), so
start-up and imports are never counted. Each figure is instructions per request,
less the cost of an empty phase (the marks themselves).

The breakdown of one enqueue and one cached GET /status, each measured on its own:
  chalice dispatch + adapter  the WSGI call less Spool's route (routes.handle):
                              ChaliceWSGI, LocalGateway's event, Chalice's dispatch,
                              app.py's shell and the response's way back
  validation                  the body's strict JSON decoding and the job's checks
  store add                   the store's add of one job already built
  logging                     the route's log lines (the route with and without them)
  rest of the route           the route without its lines less validation and add
                              (auth, the tenant, the job's build, counters, answer)
"""

from __future__ import annotations

import argparse
import atexit
import dataclasses
import io
import json
import logging
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import callgrind_marks

JOB = b'{"type": "echo", "payload": {"n": 1}}'
WARMUP = 50


def _environ(method: str, path: str, body: bytes = b"") -> dict[str, Any]:
    """What waitress hands the app for this request (the headers http_bench sends)."""
    return {
        "REQUEST_METHOD": method,
        "PATH_INFO": path,
        "REQUEST_URI": path,
        "QUERY_STRING": "",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1",
        "HTTP_HOST": "127.0.0.1:8000",
        "HTTP_X_API_KEY": "k-0123456789abcdef",
        "HTTP_USER_AGENT": "wrk",
        "HTTP_CONNECTION": "keep-alive",
        "CONTENT_TYPE": "application/json",
        "CONTENT_LENGTH": str(len(body)),
        "wsgi.input": io.BytesIO(body),
    }


def _ignore(status: str, headers: list[tuple[str, str]]) -> None:
    pass


def app_settings(workdir: Path) -> None:
    """The app's settings for a bench process, its store in `workdir`; lines are
    formatted and written as `spool serve` writes them, to a sink. Call before
    importing app.py (it reads them at import)."""
    os.environ.update(
        SPOOL_API_KEYS="k-0123456789abcdef=t",
        SPOOL_STORE_URL=f"sqlite:///{workdir}/spool.db",
        SPOOL_DEMO_HANDLERS="true",
    )
    from chalicelib import logs

    logs.configure(default_level="INFO", stream=open(os.devnull, "w"))  # noqa: SIM115


def _phases(workdir: Path) -> dict[str, Callable[[], Any]]:
    """Each phase: one call that does one request's worth of the thing measured."""
    app_settings(workdir)
    import app as spool_app
    from bench.http_floor import FloorApp
    from chalicelib import runtime
    from chalicelib.api import routes
    from chalicelib.api.http import ApiRequest
    from chalicelib.ids import new_job_id
    from chalicelib.models import NewJob
    from local.server import ChaliceWSGI

    rt = runtime.current()
    wsgi = ChaliceWSGI(spool_app.app)
    floor = FloorApp(str(workdir / "floor.db"))
    done = json.loads(b"".join(wsgi(_environ("POST", "/enqueue", JOB), _ignore)))["id"]
    rt.worker().drain(rt.store.clock.now().timestamp() + 5)
    status_path = f"/status/{done}"
    headers = {
        "x-api-key": "k-0123456789abcdef",
        "content-type": "application/json",
        "host": "127.0.0.1:8000",
    }
    edge = routes.current()
    quiet = [logging.getLogger("spool.http"), logging.getLogger("spool.jobs")]

    def silent(call: Callable[[], Any]) -> Callable[[], Any]:
        def run() -> Any:
            for logger in quiet:
                logger.disabled = True
            try:
                return call()
            finally:
                for logger in quiet:
                    logger.disabled = False

        return run

    def enqueue_route() -> Any:
        return routes.handle("enqueue", ApiRequest(headers=headers, body=JOB))

    def status_route() -> Any:
        return routes.handle("status", ApiRequest(headers=headers), job_id=done)

    def validate() -> Any:
        request = ApiRequest(headers=headers, body=JOB)
        return edge._enqueue_requests(request.json(edge.settings.max_body_bytes))

    def store_add() -> Any:
        job = NewJob(id=new_job_id(), type="echo", payload={"n": 1}, run_at=rt.store.clock.now())
        return rt.store.add([job])

    def build_job() -> Any:
        return NewJob(id=new_job_id(), type="echo", payload={"n": 1}, run_at=rt.store.clock.now())

    served = _served_phases(wsgi, floor, rt.settings, status_path)
    return {
        "empty": lambda: None,
        "enqueue": lambda: wsgi(_environ("POST", "/enqueue", JOB), _ignore),
        "enqueue.route": enqueue_route,
        "enqueue.route_quiet": silent(enqueue_route),
        "enqueue.validation": validate,
        "enqueue.store_add": store_add,
        "enqueue.build_job": build_job,  # store_add's own NewJob, taken off it
        "status": lambda: wsgi(_environ("GET", status_path), _ignore),
        "status.route": status_route,
        "status.route_quiet": silent(status_route),
        "floor.enqueue": lambda: floor(_environ("POST", "/enqueue", JOB), _ignore),
        "floor.get": lambda: floor(_environ("GET", status_path), _ignore),
        **served,
    }


# The client of the served phases: its own process, which valgrind does not follow
# (--trace-children=no), so only the server's side of each request is counted. Each
# request goes out in one write, with the headers http.client sends: http.client
# writes a body apart from its head, and whether the server (slow under valgrind)
# found both in one read or took a loop turn for each depended on the machine's
# load, moving the served enqueue's count by up to 15% between runs of one tree.
CLIENT = """
import http.client, socket, sys
body, conns = sys.argv[1].encode(), {}
for line in sys.stdin:
    port, method, path, n = line.split()
    sock = conns.get(port) or socket.create_connection(("127.0.0.1", int(port)))
    conns[port] = sock
    sent = body if method == "POST" else b""
    head = [f"{method} {path} HTTP/1.1", f"Host: 127.0.0.1:{port}", "Accept-Encoding: identity",
            "X-API-Key: k-0123456789abcdef", "Content-Type: application/json"]
    if method == "POST":
        head.append(f"Content-Length: {len(sent)}")
    request = ("\\r\\n".join(head) + "\\r\\n\\r\\n").encode() + sent
    for _ in range(int(n)):
        sock.sendall(request)
        answer = http.client.HTTPResponse(sock, method=method)
        answer.begin()
        answer.read()
        if answer.status >= 300:
            sys.exit(f"{method} {path}: {answer.status}")
    print("done", flush=True)
"""


def _served_phases(
    wsgi: Any, floor: Any, settings: Any, status_path: str
) -> dict[str, Callable[[], Any]]:
    """Requests over a socket to `spool serve`'s server (local/server.py: waitress, its
    guards, quick requests on the loop thread, as _serve builds it) and to the floor's
    (bench/http_floor.py: the same server), from a client process: each call is one
    request, counted from the server's side only."""
    from local.http_limits import HttpLimits
    from local.quick_routes import quick_requests
    from local.server import Server

    # The client's connections sit idle while the unserved phases run, which under
    # valgrind on a busy machine took past the default minute: the server closed them,
    # and the next phase's request met a broken pipe.
    idle: dict[str, Any] = {"idle_timeout": 86_400.0}
    spool = Server(
        wsgi,
        "127.0.0.1",
        0,
        8,
        limits=dataclasses.replace(HttpLimits.from_settings(settings), **idle),
        quick=quick_requests(settings.store_url),
    )
    floor_server = Server(
        floor, "127.0.0.1", 0, 8, limits=HttpLimits(**idle), quick=lambda *_: True
    )
    for server in (spool, floor_server):
        # Under valgrind an enqueue takes 30-80 ms of wall time, past the 50 ms after
        # which the watchdog takes the loop over from a stalled inline request
        # (local/inline_dispatch.py) and turns it meanwhile: how often it did followed
        # the machine's load (served enqueues of one tree read 1.55M and 1.92M). At full
        # speed no such request stalls, so here none is taken for one.
        if server._inline is not None:
            server._inline.stall_after = 3600.0
        server.start()
    client = subprocess.Popen(
        [sys.executable, "-c", CLIENT, JOB.decode()],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert client.stdin is not None and client.stdout is not None
    stdin, stdout = client.stdin, client.stdout

    def stop() -> None:
        stdin.close()
        client.wait(10)
        for server in (spool, floor_server):
            server.stop()

    atexit.register(stop)

    def requests(server: Any, method: str, path: str, count: int = 1) -> Callable[[], Any]:
        def one() -> None:
            stdin.write(f"{server.port} {method} {path} {count}\n")
            stdin.flush()
            if stdout.readline().strip() != "done":
                raise SystemExit(f"the client failed on {method} {path}")

        return one

    return {
        "served.empty": requests(spool, "GET", status_path, 0),  # the pipe to the client
        "served.enqueue": requests(spool, "POST", "/enqueue"),
        "served.status": requests(spool, "GET", status_path),
        "served.floor.enqueue": requests(floor_server, "POST", "/enqueue"),
        "served.floor.get": requests(floor_server, "GET", status_path),
    }


def _settle(workdir: Path) -> None:
    """Empty both SQLite files' WALs before a phase. A checkpoint otherwise fell inside
    whichever phase was running when a WAL passed its mark (Spool's thread copies
    10,000 pages back, tens of millions of instructions, once per ~1,000 enqueues).
    With the WALs empty, no phase of 200 requests writes enough to set one off, so
    none is counted anywhere (its share, the same before and after, is left out)."""
    for name in ("spool.db", "floor.db"):
        conn = sqlite3.connect(workdir / name, timeout=30)
        try:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        finally:
            conn.close()


def child(n: int) -> int:
    workdir = Path(tempfile.mkdtemp(prefix="spool-http-instructions-"))
    try:
        phases = _phases(workdir)
        # The heap frozen after the warm-up: a full collection would walk the whole of
        # it (chalice, pydantic, the floor's too) in whichever phase it fell in.
        callgrind_marks.count_phases(
            phases, n, WARMUP, freeze_heap=True, before_each=lambda: _settle(workdir)
        )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


def table(each: dict[str, float]) -> list[tuple[str, float, str]]:
    """(row, instructions per request, note) for the report."""
    enq, st = each["enqueue"], each["status"]
    add = each["enqueue.store_add"] - each["enqueue.build_job"]
    validation = each["enqueue.validation"]
    quiet = each["enqueue.route_quiet"]
    floor_enq, floor_get = each["floor.enqueue"], each["floor.get"]
    return [
        ("POST /enqueue, one job (WSGI call)", enq, f"apps: floor / spool = {floor_enq / enq:.0%}"),
        ("  chalice dispatch + adapter", enq - each["enqueue.route"], ""),
        ("  validation (decode + checks)", validation, ""),
        ("  store add", add, ""),
        ("  logging (its lines)", each["enqueue.route"] - quiet, ""),
        ("  rest of the route", quiet - validation - add, ""),
        ("floor POST /enqueue (parse + insert)", floor_enq, ""),
        ("GET /status, cache hit (WSGI call)", st, f"apps: floor / spool = {floor_get / st:.0%}"),
        ("  chalice dispatch + adapter", st - each["status.route"], ""),
        ("  logging (its line)", each["status.route"] - each["status.route_quiet"], ""),
        ("  the route", each["status.route_quiet"], ""),
        ("floor GET (a constant)", floor_get, ""),
        *_served_rows(each),
    ]


def _share(floor: float, spool: float) -> str:
    return f"served: floor / spool = {floor / spool:.0%} (the issue's ratio)"


def _served_rows(each: dict[str, float]) -> list[tuple[str, float, str]]:
    """Whole requests over a socket, waitress included, less the pipe to the client."""
    pipe = each["served.empty"]
    spool_enq, spool_st = each["served.enqueue"] - pipe, each["served.status"] - pipe
    floor_enq, floor_get = each["served.floor.enqueue"] - pipe, each["served.floor.get"] - pipe
    return [
        ("served POST /enqueue: spool serve", spool_enq, _share(floor_enq, spool_enq)),
        ("served POST /enqueue: floor", floor_enq, ""),
        ("served GET /status cache hit: spool", spool_st, _share(floor_get, spool_st)),
        ("served GET: floor (a constant)", floor_get, ""),
    ]


def measure(n: int, keep: Path | None = None) -> dict[str, float]:
    """Run the child under callgrind; instructions per request for each phase."""
    counts = callgrind_marks.run_child(
        "bench.http_instructions", ["--n", str(n)], keep, expect="enqueue"
    )
    return callgrind_marks.per_request(counts, n)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=200, help="requests per phase")
    parser.add_argument("--keep", type=Path, help="keep callgrind's files in this directory")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON too")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args.n)
    each = measure(args.n, args.keep)
    print(f"instructions per request (callgrind, {args.n} requests a phase, after warm-up)")
    print(f"{'request / component':40} {'instructions':>13}  note")
    for row, value, note in table(each):
        print(f"{row:40} {value:13,.0f}  {note}")
    if args.json:
        print(json.dumps({name: round(value) for name, value in each.items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

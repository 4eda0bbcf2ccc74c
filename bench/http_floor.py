"""The floor for bench/http_bench.py: Spool's HTTP server with almost no app.

    python -m bench.http_floor --port P --db PATH [--threads 8] [--processes N]

The same server stack as `spool serve` (local/server.py: waitress with
local/http_guard.py's guards, the same threads; with --processes N the same
SO_REUSEPORT sockets from local/multiproc.py), but its app only parses the
JSON body and inserts one row with raw sqlite3 (WAL, synchronous=NORMAL as
Spool's SQLite store, one connection behind a lock as Spool's one writer), then
answers 201 with the new row's id. GET answers the row by id. What Spool costs
beyond this is the price of its checks, its store and its routing.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Callable, Iterable
from typing import Any

from local.multiproc import inherited_socket, listening_sockets
from local.server import Server

SCHEMA = "CREATE TABLE IF NOT EXISTS jobs (id INTEGER PRIMARY KEY, type TEXT, payload TEXT)"


class FloorApp:
    """POST: parse, insert, commit, 201. Nothing else: no auth, no validation."""

    def __init__(self, db: str) -> None:
        self.conn = sqlite3.connect(db, check_same_thread=False, isolation_level=None)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=NORMAL")
        self.conn.execute("PRAGMA busy_timeout=10000")
        self.conn.execute(SCHEMA)
        self.lock = threading.Lock()

    def __call__(
        self, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length) if length > 0 else b""
        if environ["REQUEST_METHOD"] == "POST":
            data = json.loads(body)
            with self.lock:
                cursor = self.conn.execute(
                    "INSERT INTO jobs (type, payload) VALUES (?, ?)",
                    (data.get("type"), json.dumps(data.get("payload"))),
                )
            out, status = json.dumps({"id": cursor.lastrowid}).encode(), "201 Created"
        else:
            out, status = b'{"status":"ok"}', "200 OK"
        start_response(
            status, [("Content-Type", "application/json"), ("Content-Length", str(len(out)))]
        )
        return [out]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--db", required=True)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--processes", type=int, default=1)
    parser.add_argument("--listen-fd", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.processes > 1 and args.listen_fd is None:
        sockets = listening_sockets(args.host, args.port, args.processes)
        children = [
            subprocess.Popen(
                [
                    *(sys.executable, "-m", "bench.http_floor", "--port", str(args.port)),
                    *("--db", args.db, "--threads", str(args.threads)),
                    *("--listen-fd", str(sock.fileno())),
                ],
                pass_fds=[sock.fileno()],
            )
            for sock in sockets
        ]
        stopped = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stopped.set())
        signal.signal(signal.SIGINT, lambda *_: stopped.set())
        stopped.wait()
        for child in children:
            child.terminate()
        for child in children:
            child.wait(15)
        return 0
    sock = inherited_socket(args.listen_fd) if args.listen_fd is not None else None
    # Every floor request is quick: served on the loop thread, as `spool serve`
    # serves its quick ones (local/inline_dispatch.py).
    server = Server(
        FloorApp(args.db), args.host, args.port, args.threads, sock=sock, quick=lambda *_: True
    )
    signal.signal(signal.SIGTERM, lambda *_: server.stop(wait=None))
    parent = os.getppid()

    def orphaned() -> None:  # never outlive the bench
        while os.getppid() == parent:
            threading.Event().wait(0.5)
        server.stop(wait=None)

    threading.Thread(target=orphaned, daemon=True).start()
    server.serve()
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""`spool serve`: the whole system on one machine.

app.py behind waitress (local/server.py) plus the emulated worker
(local/emulator.py), on the store from SPOOL_STORE_URL (SQLite by default).
With SPOOL_API_KEYS unset it makes a dev key and prints it, with a curl line
that works as pasted. Ctrl-C (or SIGTERM) stops accepting, lets running
requests and jobs finish, and exits 0.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import secrets
import shlex
import signal
import sys
from typing import Any

from chalicelib import runtime as runtime_module
from chalicelib.runtime import Runtime

DEV_TENANT = "dev"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="0 picks a free port")
    parser.add_argument("--threads", type=int, default=None, help="HTTP worker threads")
    parser.add_argument(
        "--no-worker", action="store_true", help="serve the API only; run `spool worker` apart"
    )


def with_dev_key(rt: Runtime) -> tuple[Runtime, str | None, bool]:
    """Keep configured keys (showing the first plain one); otherwise make a dev key.

    Returns the runtime to serve, a key for the curl line, and whether it was made now.
    """
    if rt.settings.api_keys.strip():
        plain = [
            e.strip().rpartition("=")[0]
            for e in rt.settings.api_keys.split(",")
            if e.strip() and not e.strip().startswith("sha256:")
        ]
        return rt, (plain[0] if plain else None), False
    key = "dev-" + secrets.token_urlsafe(24)
    os.environ["SPOOL_API_KEYS"] = f"{key}={DEV_TENANT}"
    settings = dataclasses.replace(rt.settings, api_keys=os.environ["SPOOL_API_KEYS"])
    return dataclasses.replace(rt, settings=settings), key, True


def banner(url: str, rt: Runtime, key: str | None, generated: bool, worker: bool) -> str:
    shown = key or "<your key>"
    body = '{"type": "echo", "payload": {"hello": "world"}}'
    lines = [
        f"spool: serving app.py on {url}",
        f"  store   {rt.settings.store_url}",
        "  worker  " + ("emulated (app.py drain_due, invoked on new work)" if worker else "off"),
    ]
    if generated:
        lines.append(f"  dev API key (tenant {DEV_TENANT}), made for this run: {key}")
    lines += [
        "try:",
        f"  curl -s -X POST {url}/enqueue -H {shlex.quote('X-API-Key: ' + shown)} "
        f"-H 'Content-Type: application/json' -d {shlex.quote(body)}",
        f"  curl -s {shlex.quote(url + '/status/<id>?wait=5')} "
        f"-H {shlex.quote('X-API-Key: ' + shown)}",
        "Ctrl-C stops.",
    ]
    return "\n".join(lines)


def cmd_serve(rt: Runtime, args: argparse.Namespace) -> int:
    import app as spool_app
    from chalicelib.api.auth import Keyring
    from local.emulator import Emulator
    from local.server import DEFAULT_THREADS, ChaliceWSGI, Server

    rt, key, generated = with_dev_key(rt)
    try:
        Keyring.parse(rt.settings.api_keys)  # fail here, not with a 500 on every request
    except ValueError as exc:
        print(f"spool: SPOOL_API_KEYS: {exc}", file=sys.stderr)
        return 2
    runtime_module.reset(rt)  # app.py's routes and handlers now use this runtime
    try:
        server = Server(
            ChaliceWSGI(spool_app.app), args.host, args.port, args.threads or DEFAULT_THREADS
        )
    except OSError as exc:
        print(f"spool: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        runtime_module.reset(None)
        return 1
    emulator = None if args.no_worker else Emulator(spool_app.app, rt)

    def stop(signum: int, frame: Any) -> None:
        server.stop(wait=None)

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    if emulator is not None:
        emulator.start()
    print(banner(server.url, rt, key, generated, emulator is not None), flush=True)
    try:
        server.serve()
    finally:
        if emulator is not None:
            emulator.stop()
        runtime_module.reset(None)
    print("spool: stopped", file=sys.stderr, flush=True)
    return 0

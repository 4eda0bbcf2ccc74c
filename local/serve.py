"""`spool serve`: the whole system on one machine.

app.py behind waitress (local/server.py) plus the emulated worker
(local/emulator.py), on the store from SPOOL_STORE_URL (SQLite by default).
With SPOOL_API_KEYS unset it is in laptop mode: it makes a dev key for tenant
`default` (the tenant `spool enqueue` uses, so the CLI and the API see the
same jobs), turns on the demo handlers unless SPOOL_DEMO_HANDLERS says
otherwise, and prints the key with a curl line that works as pasted. Keys
from SPOOL_API_KEYS are never printed, and the store URL is shown redacted.
Ctrl-C (or SIGTERM) stops accepting, lets running requests and jobs finish,
and exits 0. `--processes N` serves the port from N such server processes
under a supervisor that runs the emulated worker once (local/multiproc.py).
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
from chalicelib.models import DEFAULT_TENANT
from chalicelib.redact import redact_url
from chalicelib.runtime import Runtime
from local.cli_errors import CliFailure, UsageError

DEV_TENANT = DEFAULT_TENANT
DEMO_VARIABLE = "SPOOL_DEMO_HANDLERS"
METRICS_KEYS = "SPOOL_METRICS_KEYS"
MAX_WAITS = "SPOOL_MAX_WAITS"
MAX_THREADS = 1024


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=_port, default=8000, help="0 picks a free port")
    parser.add_argument(
        "--threads", type=_threads, default=None, help=f"HTTP worker threads (1-{MAX_THREADS})"
    )
    parser.add_argument(
        "--no-worker", action="store_true", help="serve the API only; run `spool worker` apart"
    )
    parser.add_argument(
        "--processes",
        type=int,
        default=1,
        help="server processes sharing the port (default 1; see docs/self-hosting.md)",
    )
    # Set by `--processes N`'s supervisor on the server processes it starts (local/multiproc.py).
    parser.add_argument("--listen-fd", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--ready-fd", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--supervisor-pid", type=int, default=None, help=argparse.SUPPRESS)


def _port(text: str) -> int:
    """0-65535: a bigger number was bound modulo 65536, another port than asked."""
    try:
        port = int(text)
    except ValueError:
        port = -1
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"must be 0-65535 (0 picks a free one), not {text!r}")
    return port


def _threads(text: str) -> int:
    """At least one (with none the server accepted and never answered), at most
    MAX_THREADS (more failed with "can't start new thread")."""
    try:
        threads = int(text)
    except ValueError:
        threads = 0
    if not 1 <= threads <= MAX_THREADS:
        raise argparse.ArgumentTypeError(f"must be 1-{MAX_THREADS}, not {text!r}")
    return threads


def with_dev_key(rt: Runtime) -> tuple[Runtime, str | None, bool]:
    """Keep configured keys (never shown); otherwise make a dev key, laptop mode.

    Returns the runtime to serve, the key to print (only one made now: a key
    from SPOOL_API_KEYS is a secret this process must not echo), and whether
    it was made now. Laptop mode also turns on the demo handlers, unless
    SPOOL_DEMO_HANDLERS is set either way.
    """
    if rt.settings.api_keys.strip():
        return rt, None, False
    key = "dev-" + secrets.token_urlsafe(24)
    os.environ["SPOOL_API_KEYS"] = f"{key}={DEV_TENANT}"
    settings = dataclasses.replace(rt.settings, api_keys=os.environ["SPOOL_API_KEYS"])
    if not rt.settings.text(METRICS_KEYS):
        # One key for the laptop: the same dev key reads /metrics too.
        os.environ[METRICS_KEYS] = key
        settings = dataclasses.replace(settings, extra={**settings.extra, METRICS_KEYS: key})
    if not rt.settings.extra.get(DEMO_VARIABLE, "").strip():
        os.environ[DEMO_VARIABLE] = "true"  # app.py's runtime and the emulator agree
        settings = dataclasses.replace(settings, demo_handlers=True)
    return rt.with_settings(settings), key, True


def with_wait_cap(rt: Runtime, threads: int) -> Runtime:
    """Long-polls hold a server thread each: unless SPOOL_MAX_WAITS says otherwise,
    let them take at most half the threads, so /health and other clients are served."""
    if rt.settings.text(MAX_WAITS):
        return rt
    extra = {**rt.settings.extra, MAX_WAITS: str(max(1, threads // 2))}
    return rt.with_settings(dataclasses.replace(rt.settings, extra=extra))


def check_edge_settings(rt: Runtime) -> None:
    """Refuse malformed keys and metric settings at start-up, not with a 500 per request."""
    from chalicelib.api.auth import Keyring, operator_keys
    from chalicelib.api.metric_labels import QueueLabels

    checks: list[tuple[str, Any]] = [
        ("SPOOL_API_KEYS", lambda: Keyring.parse(rt.settings.api_keys)),
        (METRICS_KEYS, lambda: operator_keys(rt.settings.text(METRICS_KEYS))),
        ("SPOOL_METRICS_MAX_QUEUES", lambda: QueueLabels.from_settings(rt.settings)),
    ]
    for name, check in checks:
        try:
            check()
        except ValueError as exc:
            message = str(exc) if name in str(exc) else f"{name}: {exc}"
            raise UsageError(message, "Fix the variable and start again") from None


def banner(
    url: str, rt: Runtime, key: str | None, generated: bool, worker: bool, processes: int = 1
) -> str:
    shown = key or "<your key>"
    header = shlex.quote("X-API-Key: " + shown)
    demo = "echo" in rt.registry.types()
    served = f" by {processes} server processes" if processes > 1 else ""
    lines = [
        f"spool: serving app.py on {url}{served}",
        f"  store   {redact_url(rt.settings.store_url)}",
        "  worker  " + ("emulated (app.py drain_due, invoked on new work)" if worker else "off"),
        "  demo    "
        + ("echo, sleep, fail" if demo else "off")
        + f" ({DEMO_VARIABLE}={'true' if demo else 'false'})",
    ]
    if generated:
        lines.append(f"  dev API key (tenant {DEV_TENANT}), made for this run: {key}")
    else:
        lines.append("  API keys from SPOOL_API_KEYS (not shown): use yours for <your key>")
    lines.append("try:")
    if demo:
        body = '{"type": "echo", "payload": {"hello": "world"}}'
        lines.append(
            f"  curl -s -X POST {url}/enqueue -H {header} "
            f"-H 'Content-Type: application/json' -d {shlex.quote(body)}"
        )
        lines.append(f"  curl -s {shlex.quote(url + '/status/<id>?wait=5')} -H {header}")
    else:
        lines.append(f"  curl -s {url}/openapi.json -H {header}   # the job types on offer")
    lines.append("Ctrl-C stops.")
    return "\n".join(lines)


def cmd_serve(rt: Runtime, args: argparse.Namespace) -> int:
    import app as spool_app
    from local.emulator import Emulator
    from local.http_limits import HttpLimits
    from local.server import DEFAULT_THREADS, ChaliceWSGI, Server

    rt, key, generated = with_dev_key(rt)
    threads = args.threads or DEFAULT_THREADS
    rt = with_wait_cap(rt, threads)
    check_edge_settings(rt)
    if args.processes != 1 and args.listen_fd is None:
        return serve_processes(rt, args, threads, key, generated)
    runtime_module.reset(rt)  # app.py's routes and handlers now use this runtime
    sock = None
    if args.listen_fd is not None:  # one of `--processes N`'s server processes
        from local.multiproc import inherited_socket

        sock = inherited_socket(args.listen_fd)
    try:
        server = Server(
            ChaliceWSGI(spool_app.app),
            args.host,
            args.port,
            threads,
            limits=HttpLimits.from_settings(rt.settings),
            sock=sock,
        )
    except OSError as exc:
        runtime_module.reset(None)
        raise CliFailure(
            f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc}",
            "Pick another --port (0 picks a free one) or stop what is using it",
        ) from None
    except ValueError as exc:  # a malformed SPOOL_HTTP_* setting
        runtime_module.reset(None)
        raise UsageError(str(exc), "Fix the variable and start again") from None
    emulator = None if args.no_worker else Emulator(spool_app.app, rt)

    def stop(signum: int, frame: Any) -> None:
        server.stop(wait=None)

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    if emulator is not None:
        emulator.start()
    if args.supervisor_pid is not None:
        from local.multiproc import exit_with_supervisor, report_ready

        exit_with_supervisor(args.supervisor_pid, lambda: server.stop(wait=None))
        report_ready(args.ready_fd)
    else:
        print(banner(server.url, rt, key, generated, emulator is not None), flush=True)
    try:
        server.serve()
    finally:
        if emulator is not None:
            emulator.stop()
        runtime_module.reset(None)
    if args.supervisor_pid is None:
        print("spool: stopped", file=sys.stderr, flush=True)
    return 0


def store_down(rt: Runtime) -> bool:
    """Does the store fail to answer one cheap read (as /health asks)?"""
    from chalicelib.errors import StoreUnavailable

    try:
        rt.store.get("j_health_probe")
    except StoreUnavailable:
        return True
    return False


def serve_processes(
    rt: Runtime, args: argparse.Namespace, threads: int, key: str | None, generated: bool
) -> int:
    """`--processes N`: N server processes on one port, the emulated worker here, once."""
    import app as spool_app
    from local.emulator import Emulator
    from local.http_limits import HttpLimits
    from local.multiproc import MAX_PROCESSES, Supervisor, listening_sockets

    if not 1 <= args.processes <= MAX_PROCESSES:
        raise UsageError(
            f"--processes must be between 1 and {MAX_PROCESSES}, not {args.processes}",
            "About one per core is the useful number",
        )
    if sys.platform == "win32":
        raise UsageError("--processes needs a POSIX system", "Run one process per port instead")
    try:
        HttpLimits.from_settings(rt.settings)  # refused here, not N times over
    except ValueError as exc:
        raise UsageError(str(exc), "Fix the variable and start again") from None
    try:
        sockets = listening_sockets(args.host, args.port, args.processes)
    except OSError as exc:
        raise CliFailure(
            f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc}",
            "Pick another --port (0 picks a free one) or stop what is using it",
        ) from None
    # The server processes read the same settings from the environment: the dev key
    # and demo switch with_dev_key put there, and this process's cap on long-polls.
    env = {**os.environ, MAX_WAITS: rt.settings.text(MAX_WAITS)}
    supervisor = Supervisor(sockets, threads, env, store_down=lambda: store_down(rt))

    def stop(signum: int, frame: Any) -> None:
        supervisor.request_stop()

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    supervisor.start()
    runtime_module.reset(rt)
    emulator = None if args.no_worker else Emulator(spool_app.app, rt)
    if emulator is not None:
        emulator.start()
    host, port = sockets[0].getsockname()[:2]
    url = f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
    print(banner(url, rt, key, generated, emulator is not None, args.processes), flush=True)
    try:
        code = supervisor.watch()
    finally:
        supervisor.stop()
        if emulator is not None:
            emulator.stop()
        runtime_module.reset(None)
    print("spool: stopped", file=sys.stderr, flush=True)
    return code

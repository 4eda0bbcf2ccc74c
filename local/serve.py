"""`spool serve`: the whole system on one machine.

app.py behind waitress (local/server.py) plus the emulated worker
(local/emulator.py), on the store from SPOOL_STORE_URL (SQLite by default).
With SPOOL_API_KEYS unset it is in laptop mode: it makes a dev key for tenant
`default` (the tenant `spool enqueue` uses, so the CLI and the API see the
same jobs), turns on the demo handlers unless SPOOL_DEMO_HANDLERS says
otherwise, and prints the key with a curl line that works as pasted. Keys
from SPOOL_API_KEYS are never printed, and the store URL is shown redacted.
Ctrl-C (or SIGTERM, or SIGHUP unless ignored) stops accepting, lets running
requests and jobs finish, and exits 0; a second Ctrl-C stops at once, exit 130
(StopSignals). `--processes N` serves the port from N such server processes
under a supervisor that runs the emulated worker once (local/multiproc.py).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import errno
import ipaddress
import os
import re
import secrets
import shlex
import signal
import socket
import sys
import time
import urllib.parse
from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING, Any

from chalicelib import logs
from chalicelib.edge_settings import FIX, has_keys, refuse_server_keys_in_the_client_variable
from chalicelib.job_state import DEFAULT_TENANT
from chalicelib.redact import redact_url
from local import cli_ranges
from local.cli_errors import EXIT_INTERRUPTED, CliFailure, UsageError

# The engine (the runtime, the stores) is imported where a server starts: `spool
# --help` and the remote commands build this command's options without it.
if TYPE_CHECKING:
    from chalicelib.api.routes import Edge
    from chalicelib.config import Settings
    from chalicelib.runtime import Runtime
    from local.server import Server

DEV_TENANT = DEFAULT_TENANT
DEMO_VARIABLE = "SPOOL_DEMO_HANDLERS"
METRICS_KEYS = "SPOOL_METRICS_KEYS"
PORT_IN_USE_FIX = (
    "Pick another --port (0 picks a free one; under make run: PORT=N make run)"
    " or stop what is using it"
)
MAX_WAITS = "SPOOL_MAX_WAITS"
MAX_THREADS = 1024
STOPPING = "stopping: finishing running requests and jobs"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--host",
        type=_host,
        default="127.0.0.1",
        help="address to bind (default 127.0.0.1, this machine only; 0.0.0.0: every interface)",
    )
    parser.add_argument(
        "--port",
        type=_port,
        default=8000,
        help="port to listen on (default 8000; 0 picks a free one)",
    )
    parser.add_argument(
        "--threads",
        type=_threads,
        default=None,
        # local/server.py's DEFAULT_THREADS; not imported here: it loads chalice and waitress
        help=f"HTTP worker threads (1-{MAX_THREADS}, default 16)",
    )
    parser.add_argument(
        "--no-worker", action="store_true", help="serve the API only; run `spool worker` apart"
    )
    parser.add_argument(
        "--processes",
        type=_processes,
        default=1,
        help="server processes sharing the port (default 1; see docs/self-hosting.md)",
    )
    # Set by `--processes N`'s supervisor on the server processes it starts (local/multiproc.py).
    parser.add_argument("--listen-fd", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--ready-fd", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--supervisor-pid", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--heartbeat-fd", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--worker-metrics", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--shared-metrics", default=None, help=argparse.SUPPRESS)


def _host(text: str) -> str:
    """An address or a host name: never one with spaces or control characters, a URL
    (SPOOL_URL pasted), a host:port or a dotted number that is no IPv4 address, which
    were handed to the resolver and came back as waitress's "Invalid host/port
    specified.", naming neither the host nor the mistake."""
    if not text.strip() or any(c.isspace() or not c.isprintable() for c in text):
        raise argparse.ArgumentTypeError(
            f"must be an address (127.0.0.1, 0.0.0.0, ::1) or a host name, not {text!r}"
        )
    if "://" in text:
        host = urllib.parse.urlsplit(text).hostname or "127.0.0.1"
        raise argparse.ArgumentTypeError(
            f"{text!r} is a URL: give its host alone (--host {host}), its port as --port"
        )
    name, colon, port = text.rpartition(":")
    if colon and port.isdigit() and name and ":" not in name:
        raise argparse.ArgumentTypeError(
            f"{text!r} is a host and a port: give the port as --port (--host {name} --port {port})"
        )
    if re.fullmatch(r"[0-9.]+", text):
        try:
            ipaddress.IPv4Address(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{text!r} is not an IPv4 address: four numbers from 0 to 255 (127.0.0.1, 0.0.0.0)"
            ) from None
    return text


def listen_failure(
    host: str,
    port: int,
    exc: OSError,
    *,
    what: str = "listen",
    host_option: str = "--host",
    port_fix: str = PORT_IN_USE_FIX,
) -> CliFailure:
    """Why a port cannot be bound, with the fix for that reason: every failure used
    to say "pick another --port", also when the port was free and the address was the
    mistake. `spool serve` (--host) and `spool worker`'s metrics port (--metrics-host,
    `what="serve metrics"`) both bind through it."""
    problem = f"cannot {what} on {host}:{port}: {exc.strerror or exc}"
    if exc.errno == errno.EADDRNOTAVAIL or isinstance(exc, socket.gaierror):
        return UsageError(problem, _host_fix(host_option))
    if exc.errno == errno.EACCES:
        return UsageError(
            problem, "ports below 1024 need root (or CAP_NET_BIND_SERVICE): pick 1024 or above"
        )
    return CliFailure(problem, port_fix)


def _host_fix(host_option: str) -> str:
    return (
        f"{host_option} must be an address of this machine: 127.0.0.1 (this machine "
        "only), 0.0.0.0 (every interface) or one of its interfaces' addresses"
    )


# What waitress raises, as a ValueError, for a host name the resolver does not know.
_WAITRESS_NO_ADDRESS = "Invalid host/port specified."


def server_failure(host: str, port: int, exc: ValueError) -> UsageError:
    """The server refused its settings: waitress's words for a host name that resolves
    to nothing named neither the host nor the fix; a SPOOL_HTTP_* setting's keep theirs."""
    if str(exc) == _WAITRESS_NO_ADDRESS:
        return UsageError(
            f"cannot listen on {host}:{port}: the name resolves to no address of this machine",
            _host_fix("--host"),
        )
    return UsageError(str(exc), "Fix --host / --port or the SPOOL_HTTP_* variable and start again")


def _port(text: str) -> int:
    """0-65535: a bigger number was bound modulo 65536, another port than asked. The
    refusal names PORT too: `PORT=abc make run` said only "argument --port"."""
    return cli_ranges.whole(  # `make run` passes PORT as --port: name both
        text,
        0,
        65535,
        "must be 0-65535 (0 picks a free one; under make run: PORT=N make run), not {text!r}",
    )


def _processes(text: str) -> int:
    """1 to MAX_PROCESSES, checked as the other numbers are: a word or a fraction said
    argparse's "invalid int value", and a count out of range was refused only after
    the store had been opened."""
    from local.multiproc import MAX_PROCESSES

    return cli_ranges.whole(
        text,
        1,
        MAX_PROCESSES,
        "must be between {low} and {high} (about one per core is the useful number), not {text!r}",
    )


def _threads(text: str) -> int:
    """At least one (with none the server accepted and never answered), at most
    MAX_THREADS (more failed with "can't start new thread")."""
    return cli_ranges.whole(text, 1, MAX_THREADS, "must be 1-{high}, not {text!r}")


class StopSignals:
    """Ctrl-C, SIGTERM and SIGHUP for a command that runs until stopped (serve, worker).

    SIGHUP is what a closed terminal or a dropped ssh session sends: left to its
    default it killed the process at once, as SIGKILL would (the running job kept
    `running`, its attempt spent, until its lease lapsed; held outcomes lost). It
    stops gracefully like SIGTERM instead, unless the process was started with it
    ignored (`nohup`), which is kept: such a command runs on.

    The first asks for a graceful stop: one line says so, `stop` runs once, the
    command finishes what is running and exits 0. A second Ctrl-C stops at once,
    exit 130: what was running is abandoned (a job's lease lapses and it runs
    again). A second SIGTERM changes nothing: a supervisor sends one to each
    process, and Ctrl-C in a terminal reaches every process of the group too.

    A Python signal handler runs in the main thread between two bytecodes, maybe
    while that thread holds a lock (inside threading.Event.set, a print): a
    handler that takes the same lock never returns. So the handler only sets
    plain attributes, calls `wake` (which must be lock-free too) and writes to a
    pipe with os.write; `stop`, which may take locks, runs on a thread of its own
    that the pipe wakes. Use it as a context manager: leaving restores the
    handlers that were there before, unless a stop was asked: the command is then
    on its way out, and a Ctrl-C during the rest of it (closing the store) still
    stops at once, rather than raising KeyboardInterrupt into that clean-up.
    """

    def __init__(
        self,
        stop: Callable[[], None] | None = None,
        wake: Callable[[], None] | None = None,
        notice: str | None = None,
    ) -> None:
        self.requested = False
        self._stop = stop
        self._wake = wake
        # None: say nothing (the server processes of `--processes N`: their
        # supervisor speaks for them).
        self._notice = notice
        self._previous: dict[int, Any] = {}
        self._read, self._write = os.pipe()
        os.set_blocking(self._write, False)  # a handler never blocks on it

    def __enter__(self) -> StopSignals:
        logs.outside_thread(self._relay, name="spool-stop").start()
        for signum in (signal.SIGINT, signal.SIGTERM):
            self._previous[signum] = signal.signal(signum, self._handle)
        if signal.getsignal(signal.SIGHUP) is not signal.SIG_IGN:  # nohup's choice stands
            self._previous[signal.SIGHUP] = signal.signal(signal.SIGHUP, self._handle)
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if not self.requested:  # once requested, _handle never touches the pipe again
            for signum, previous in self._previous.items():
                signal.signal(signum, previous)
        self._poke()  # the relay thread ends (calling nothing unless a stop was asked)
        os.close(self._write)

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested:
            if signum == signal.SIGINT:
                self._say("spool: interrupted.\n")
                os._exit(EXIT_INTERRUPTED)
            return
        self.requested = True
        if self._notice is not None:
            self._say(f"spool: {self._notice} (Ctrl-C again stops at once)\n")
        if self._wake is not None:
            self._wake()
        self._poke()

    def _say(self, text: str) -> None:
        """One line on stderr, written past sys.stderr (its buffer has a lock)."""
        if self._notice is not None:
            with contextlib.suppress(OSError):
                os.write(2, text.encode("utf-8", "replace"))

    def _poke(self) -> None:
        with contextlib.suppress(OSError):  # the relay already gone: nothing to wake
            os.write(self._write, b"x")

    def _relay(self) -> None:
        try:
            os.read(self._read, 1)
        finally:
            os.close(self._read)
        if self.requested and self._stop is not None:
            self._stop()


def with_dev_key(rt: Runtime) -> tuple[Runtime, str | None, bool]:
    """Keep configured keys (never shown); otherwise make a dev key, laptop mode.

    Returns the runtime to serve, the key to print (only one made now: a key
    from SPOOL_API_KEYS is a secret this process must not echo), and whether
    it was made now. Laptop mode also turns on the demo handlers, unless
    SPOOL_DEMO_HANDLERS is set either way.
    """
    if has_keys(rt.settings):
        return rt, None, False
    refuse_laptop_mode_on_a_shared_store(rt.settings.store_url)
    key = "dev-" + secrets.token_urlsafe(24)
    os.environ["SPOOL_API_KEYS"] = f"{key}={DEV_TENANT}"
    settings = dataclasses.replace(rt.settings, api_keys=os.environ["SPOOL_API_KEYS"])
    if not rt.settings.text(METRICS_KEYS):
        # One key for the laptop: the same dev key reads /metrics too.
        os.environ[METRICS_KEYS] = key
        settings = dataclasses.replace(settings, extra={**settings.extra, METRICS_KEYS: key})
    if laptop_handlers(rt.settings) is not rt.settings:
        os.environ[DEMO_VARIABLE] = "true"  # app.py's runtime and the emulator agree
        settings = dataclasses.replace(settings, demo_handlers=True)
    return rt.with_settings(settings), key, True


def laptop_handlers(settings: Settings) -> Settings:
    """The settings with the handlers `spool serve` offers: laptop mode (no keys)
    turns the demo handlers on unless SPOOL_DEMO_HANDLERS says either way. The
    checks made before the store is opened (local/cli.py) see what the server will."""
    if has_keys(settings) or settings.extra.get(DEMO_VARIABLE, "").strip():
        return settings
    return dataclasses.replace(settings, demo_handlers=True)


def check_keys_before_opening(settings: Settings) -> None:
    """The refusals below, before the store is opened: a connection to a shared store
    is no part of refusing to serve it."""
    if not has_keys(settings):
        refuse_server_keys_in_the_client_variable(settings)
        refuse_laptop_mode_on_a_shared_store(settings.store_url)


# Stores a dev key may serve: one machine's own file, or this process's memory.
LAPTOP_SCHEMES = ("sqlite", "memory")


def refuse_laptop_mode_on_a_shared_store(store_url: str) -> None:
    """A dev key and the demo handlers are for trying Spool on one machine. On a
    Postgres, Redis or DynamoDB store other servers and workers share, each `spool
    serve` started without keys made its own key and offered `echo`, `sleep` and
    `fail` to whoever held it, writing into the shared store as the `dev` tenant.
    A store on this machine (a local Postgres or Redis, moto_server, DynamoDB
    Local: docs/aws.md runs the AWS shape offline so) is still a laptop's. A URL of
    no known store is refused for that first: its host said nothing about sharing,
    and asking for keys sent the user to fix what was not wrong."""
    from chalicelib.storage import store_scheme

    store_scheme(store_url)
    if _on_this_machine(store_url):
        return
    from chalicelib.config import ConfigError

    raise ConfigError(
        f"serving a shared store ({redact_url(store_url)}) needs API keys, and "
        "SPOOL_API_KEYS is not set; a dev key is made only for a store on this machine "
        "(SQLite, memory, or a server on a loopback address). "
        "Set SPOOL_API_KEYS=KEY=TENANT[,KEY=TENANT...] (docs/self-hosting.md)"
    )


def _on_this_machine(store_url: str) -> bool:
    """SQLite or memory, or a store server reached on a loopback address or a local
    socket; DynamoDB only through a loopback `endpoint=` (without one it is AWS)."""
    import ipaddress
    from urllib.parse import parse_qs, urlsplit

    parts = urlsplit(store_url)
    scheme = parts.scheme.lower()
    if scheme in LAPTOP_SCHEMES:
        return True
    if scheme == "dynamodb":
        endpoints = parse_qs(parts.query).get("endpoint", [])
        if not endpoints:
            return False
        parts = urlsplit(endpoints[-1])
    try:
        host = parts.hostname
    except ValueError:  # a malformed netloc: the store refused it already, or will
        return False
    if not host:  # no host: a Unix socket (postgresql:///db, redis+unix://)
        return scheme != "dynamodb"
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def with_wait_cap(rt: Runtime, threads: int) -> Runtime:
    """Long-polls hold a server thread each: unless SPOOL_MAX_WAITS says otherwise,
    let them take at most half the threads, so /health and other clients are served.
    A cap that leaves no thread free is refused: with SPOOL_MAX_WAITS=40 and 16
    threads, 40 open waits made `GET /jobs` take 15 s and a 20 s wait up to 60 s."""
    if rt.settings.text(MAX_WAITS):
        try:
            cap = rt.settings.integer(MAX_WAITS, 1, minimum=1)
        except ValueError as exc:
            raise UsageError(str(exc), FIX) from None
        if cap >= threads:
            raise UsageError(
                f"{MAX_WAITS}={rt.settings.text(MAX_WAITS)} lets long-polls (?wait=) hold all "
                f"{threads} of the "
                "server's threads, and nothing else would be answered",
                f"Give {MAX_WAITS} at most {threads - 1}, or more --threads",
            )
        return rt
    extra = {**rt.settings.extra, MAX_WAITS: str(max(1, threads // 2))}
    return rt.with_settings(dataclasses.replace(rt.settings, extra=extra))


def check_edge_settings(rt: Runtime) -> Edge:
    """Refuse at start-up, not with a 503 per request, every setting app.py's edge would
    refuse (keys, metrics, the result cache, waits, limits, webhooks): the check `chalice
    local` makes (chalicelib/edge_settings.check_edge), so the two never drift apart.
    Returns the edge the check built, which `_serve` then serves (routes.install): built
    here, before the banner, a bad setting never reaches a request as 503
    `misconfigured`, and the edge is built once."""
    from chalicelib.edge_settings import check_edge

    try:
        return check_edge(rt)
    except ValueError as exc:  # ConfigError, or a parser's ValueError naming the variable
        raise UsageError(" ".join(str(exc).split()), FIX) from None


def check_worker_side(rt: Runtime, args: argparse.Namespace) -> None:
    """Refuse, before the banner, what the emulated worker could not work with: it
    fires the schedules and runs the jobs (nothing to check with --no-worker)."""
    from local.builtin_check import check_builtin_settings
    from local.schedule_check import checked_schedules

    if not args.no_worker:
        checked_schedules(rt)
        check_builtin_settings(rt)
        check_emulated_timeouts(rt)


def check_emulated_timeouts(rt: Runtime) -> None:
    """Refuse a handler whose timeout the emulated worker could never give it.

    The emulated worker runs jobs as the Lambda worker does, in invocations of at
    most 900 s, and starts a job only while its timeout (plus handler_check.MARGIN)
    fits before the invocation's deadline. A handler with timeout=1200 (an ETL job)
    was loaded and its jobs accepted, then left `queued` for good without a word;
    `spool worker`, which has no deadline, ran them. SPOOL_WORKER_TIMEOUT's check
    (handler_check) is the same rule for the deployed worker function."""
    from chalicelib.handler_check import MARGIN, never_started
    from local import emulator, sqs_poller

    limit = min(emulator.FUNCTION_TIMEOUT_MS, sqs_poller.FUNCTION_TIMEOUT_MS) / 1000
    specs = never_started(rt.registry.loaded_specs(), limit)
    if not specs:
        return
    named = ", ".join(f"{spec.type!r} (timeout={spec.timeout:g}s)" for spec in specs)
    raise UsageError(
        f"handler {named} would never run here: `spool serve`'s emulated worker runs jobs "
        f"as the Lambda worker does, in invocations of at most {limit:g}s, and a job needs "
        f"its timeout plus {MARGIN:g}s left to start, so its jobs would stay queued",
        f"Lower the timeout to at most {limit - MARGIN:g}s, or run `spool serve --no-worker` "
        "beside `spool worker`, which has no such bound",
    )


def local_worker(app: Any, rt: Runtime) -> Any:
    """What runs jobs beside the server: the Emulator invoking drain_due on new work, or,
    where jobs travel by SQS (DynamoDB), the poller feeding app.py's SQS function as
    Lambda does (drain_due alone only hands jobs to the queue). Both start and stop."""
    dispatch = getattr(rt.store, "dispatch", None)
    worker: Any
    if dispatch is not None:
        from local.sqs_poller import PollerThread

        worker = PollerThread(app, dispatch)
    else:
        from local.emulator import Emulator

        worker = Emulator(app, rt)
    return IntervalPush(worker, rt) if rt.settings.pushgateway_url else worker


class IntervalPush:
    """The local worker, pushing its timings every SPOOL_PUSH_INTERVAL seconds and once
    as it stops, as `spool worker` does, instead of after each of app.py's invocations
    (events.push_each_invocation): those come many times a second here."""

    def __init__(self, worker: Any, rt: Runtime) -> None:
        from local.worker_metrics import Pusher, push_interval, warn_scraped_and_pushed

        url = rt.settings.pushgateway_url or ""
        metrics = rt.metrics()
        self.worker = worker
        self.pusher = Pusher(lambda: metrics.push(url), push_interval(rt))
        warn_scraped_and_pushed(url, "this server's /metrics")

    def start(self) -> None:
        from chalicelib import events

        events.push_each_invocation(False)
        self.worker.start()
        self.pusher.start()

    def stop(self, *args: Any, **kwargs: Any) -> None:
        from chalicelib import events

        self.worker.stop(*args, **kwargs)
        self.pusher.stop()  # after the worker: its last attempts are in the exit push
        events.push_each_invocation(True)

    def __getattr__(self, name: str) -> Any:  # describe(), invoke(), ... of the worker
        return getattr(self.worker, name)


def _worker_line(worker: object, rt: Runtime) -> str:
    if not worker:  # said, so a job left queued has its reason on screen
        if getattr(rt.store, "dispatch", None) is not None:
            # Jobs travel by SQS: `spool worker` would only hand them to the queue.
            return (
                "off (--no-worker: jobs wait for the SQS worker, app.py's SQS function; "
                "here `python -m local.sqs_poller`)"
            )
        return "off (--no-worker: jobs wait for a `spool worker` on this store)"
    describe = getattr(worker, "describe", None)
    if describe is not None:
        return f"emulated ({describe()})"
    return "emulated (app.py drain_due, invoked on new work)"


# Where to listen is not where to connect: a wildcard bind is reached, from this
# machine, at its loopback address of the same family.
WILDCARDS = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}


def addresses(host: str, port: int) -> tuple[str, str]:
    """(the URL the server listens on, the URL to give a client on this machine).

    The banner gave `--host 0.0.0.0`'s clients `http://0.0.0.0:8000` to connect to,
    and `--host ::1`'s `http://::1:8000`, which no URL parser reads as host and port."""
    bound = host or "0.0.0.0"

    def url(name: str) -> str:
        return f"http://[{name}]:{port}" if ":" in name else f"http://{name}:{port}"

    return url(bound), url(WILDCARDS.get(host, host))


# Past this many a start line names the first few and counts the rest: a module of
# fifty handlers would otherwise fill the screen the URL and key are read from.
MOST_TYPES_NAMED = 12
NAMED_WHEN_SHORTENED = 10


def listed_types(types: list[str]) -> str:
    """The job types a start line names, sorted, shortened past MOST_TYPES_NAMED.

    Nothing said which types loaded, so a user could not tell whether their
    SPOOL_HANDLERS module was picked up until an enqueue was refused."""
    names = sorted(types)
    if not names:
        return "none"
    if len(names) <= MOST_TYPES_NAMED:
        return ", ".join(names)
    shown = ", ".join(names[:NAMED_WHEN_SHORTENED])
    return f"{shown}, ... and {len(names) - NAMED_WHEN_SHORTENED} more"


def types_loaded(types: list[str]) -> str:
    """A start line's job types, after its label: `spool serve`'s and the SQS poller's."""
    if not types:
        return "none loaded (name your handler modules in SPOOL_HANDLERS)"
    return f"{len(types)} loaded: {listed_types(types)}"


def _types_line(types: list[str]) -> str:
    return f"  types   {types_loaded(types)}"


def _show_banner(text: str) -> None:
    """The banner on stdout, or nothing when stdout's reader is gone.

    A BrokenPipeError here reached main(), which reads it as `spool jobs | head` and
    exits 0: a server whose output pipe was closed as it started stopped at once
    (its emulated worker left running jobs to their leases) and said it was done.
    Its log lines already go on without a reader; now the banner does too."""
    with contextlib.suppress(BrokenPipeError):
        print(text, flush=True)


def _key_source(rt: Runtime) -> str:
    """Where the configured keys are read: SPOOL_API_KEYS, or the SSM parameter named by
    SPOOL_API_KEYS_PARAMETER (the banner said SPOOL_API_KEYS for both, and an operator
    rotating a key went to change a variable the server did not have)."""
    from chalicelib.api import key_source

    try:
        name = key_source.parameter_name(rt.settings)
    except ValueError:  # refused at start already (check_edge): said there
        name = None
    if name is None:
        return "SPOOL_API_KEYS"
    return f"the SSM parameter {name}, named by {key_source.PARAMETER}"


def banner(
    url: str,
    rt: Runtime,
    key: str | None,
    generated: bool,
    worker: object,
    processes: int = 1,
    bound: str | None = None,
) -> str:
    """What `spool serve` prints at start. `url` is the address to give clients;
    `bound`, when another (a wildcard), the one it listens on."""
    shown = key or "<your key>"
    header = shlex.quote("X-API-Key: " + shown)
    types = rt.registry.types()
    demo = "echo" in types
    served = f" by {processes} server processes" if processes > 1 else ""
    where = url if bound in (None, url) else f"{bound} (every interface; from here: {url})"
    lines = [
        f"spool: serving app.py on {where}{served}",
        f"  store   {redact_url(rt.settings.store_url)}",
        "  worker  " + _worker_line(worker, rt),
        "  demo    "
        + ("echo, sleep, fail" if demo else "off")
        + f" ({DEMO_VARIABLE}={'true' if demo else 'false'})",
        _types_line(types),
        f"  ui      {url}/ui (the dashboard: paste the API key)",
    ]
    if generated:
        lines.append(f"  dev API key (tenant {DEV_TENANT}), made for this run: {key}")
    else:
        lines.append(f"  API keys from {_key_source(rt)} (not shown): use yours for <your key>")
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
    # What README's "Try it" has people type: `spool` and spool_client read these two.
    lines.append("or point the command line and the Python client at it, in another terminal:")
    lines.append(f"  export SPOOL_URL={shlex.quote(url)} SPOOL_API_KEY={shlex.quote(shown)}")
    if demo:
        lines.append(f'  {_spool_command()} enqueue echo --payload \'{{"hello": "world"}}\'')
    lines.append(
        "Ctrl-C stops (running requests and jobs finish first; press it twice to stop at once)."
    )
    return "\n".join(lines)


def _spool_command() -> str:
    """How the user ran `spool`, to paste back: `make run` runs .venv/bin/spool, which a
    new shell does not have on its PATH (README writes it that way too)."""
    ran = sys.argv[0] if sys.argv else ""
    if os.path.basename(ran) == "spool" and os.path.sep in ran:
        relative = os.path.relpath(ran)
        return shlex.quote(relative if not relative.startswith("..") else ran)
    return "spool"


def cmd_serve(rt: Runtime, args: argparse.Namespace) -> int:
    # This (main) thread runs no invocation: the emulated worker's run on its own
    # thread, so the supervisor's lines, and the shutdown's, carry no job run's id.
    with logs.outside_invocation():
        return _serve(rt, args)


def _serve(rt: Runtime, args: argparse.Namespace) -> int:
    import app as spool_app
    from chalicelib import runtime as runtime_module
    from chalicelib.api import routes
    from chalicelib.local_hosts import local_host_only, local_metrics_only
    from local import fresh_store
    from local.fair_queue import key_tenants
    from local.http_limits import HttpLimits
    from local.quick_routes import quick_requests
    from local.server import DEFAULT_THREADS, ChaliceWSGI, Server

    rt, key, generated = with_dev_key(rt)
    threads = args.threads or DEFAULT_THREADS
    rt = with_wait_cap(rt, threads)
    edge = check_edge_settings(rt)
    check_worker_side(rt, args)
    if args.processes != 1 and args.listen_fd is None:
        return serve_processes(rt, args, threads, key, generated)
    runtime_module.reset(rt)  # app.py's routes and handlers now use this runtime
    routes.install(edge)  # the edge the check built: not built again on the first request
    cache_counts = None
    if args.shared_metrics is not None:  # one of --processes N's: metrics shared with them
        from local.shared_metrics import share_metrics

        cache_counts = share_metrics(rt, args.shared_metrics, args.worker_metrics)
    sock = None
    if args.listen_fd is not None:  # one of `--processes N`'s server processes
        from local.multiproc import inherited_socket

        sock = inherited_socket(args.listen_fd)
    wsgi: Any = ChaliceWSGI(spool_app.app)
    # Where it listens: a server process of --processes N is given no --host, its socket.
    bound = str(sock.getsockname()[0]) if sock is not None else args.host
    if rt.settings.metrics_public and local_host_only(bound):
        wsgi = local_metrics_only(wsgi)  # no key: a rebinding web page could read it
    try:
        server = Server(
            wsgi,
            args.host,
            args.port,
            threads,
            limits=HttpLimits.from_settings(rt.settings),
            sock=sock,
            quick=quick_requests(rt.settings.store_url),
            tenant_of=key_tenants(rt.settings),  # the pool's turns: per tenant, not key
        )
    except OSError as exc:
        runtime_module.reset(None)
        raise listen_failure(args.host, args.port, exc) from None
    except ValueError as exc:  # a malformed SPOOL_HTTP_* setting, or --host
        runtime_module.reset(None)
        raise server_failure(args.host, args.port, exc) from None
    emulator = None if args.no_worker else local_worker(spool_app.app, rt)
    signals = StopSignals(
        wake=lambda: server.stop(wait=None),  # lock-free: see Server.stop
        notice=None if args.supervisor_pid is not None else STOPPING,
    )
    with signals:
        fresh_store.started()  # serving from here: the store is kept, whatever follows
        if emulator is not None:
            emulator.start()
        if args.supervisor_pid is not None:
            from local.multiproc import exit_with_supervisor, hang_seconds, report_ready

            hang = hang_seconds(rt.settings)
            exit_with_supervisor(
                args.supervisor_pid,
                lambda: server.stop(wait=None),
                args.heartbeat_fd,
                lambda: time.monotonic() - server.last_turn < hang,
            )
            report_ready(args.ready_fd)
        else:
            bound, url = addresses(server.host, server.port)
            _show_banner(banner(url, rt, key, generated, emulator, bound=bound))
        try:
            serve_beside_signals(server)
        finally:
            if emulator is not None:
                emulator.stop()
            if cache_counts is not None:  # every request answered: the last counts
                cache_counts.finish()
            runtime_module.reset(None)
    if args.supervisor_pid is None:
        print("spool: stopped", file=sys.stderr, flush=True)
    return 0


def serve_beside_signals(server: Server) -> None:
    """Run server.serve() on a thread of its own while this (main) thread waits.

    Python runs signal handlers on the main thread only, between bytecodes. The
    loop thread answers quick requests itself (local/inline_dispatch.py), and one
    blocked in C (SQLite's busy handler, up to its 10 s timeout, while another
    program holds the database's writer) would hold off Ctrl-C and SIGTERM for
    that long, and merge a second Ctrl-C into the first. A failure of serve()
    is raised here, as if it had run on this thread."""
    failed: list[BaseException] = []

    def run() -> None:
        try:
            server.serve()
        except BaseException as exc:  # handed to the main thread below
            failed.append(exc)

    thread = logs.outside_thread(run, name="spool-http")
    thread.start()
    while thread.is_alive():
        thread.join(0.25)
    if failed:
        raise failed[0]


def store_down(rt: Runtime) -> bool:
    """Does the store fail /health's checks: one cheap read, then what it knows of its
    writes? Reads alone still worked on a read-only SQLite file, so a server process
    that could not start on it was taken for a broken one, and after four the
    supervisor stopped every process, the healthy one and the worker too."""
    from chalicelib.errors import StoreUnavailable

    try:
        rt.store.get("j_health_probe")
        rt.store.check_writable()
    except StoreUnavailable:
        return True
    return False


def serve_processes(
    rt: Runtime, args: argparse.Namespace, threads: int, key: str | None, generated: bool
) -> int:
    """`--processes N`: N server processes on one port, the emulated worker here, once."""
    import app as spool_app
    from chalicelib import runtime as runtime_module
    from local import fresh_store
    from local.http_limits import HttpLimits
    from local.multiproc import Supervisor, hang_seconds, listening_sockets
    from local.shared_metrics import SharedMetrics

    if sys.platform == "win32":
        raise UsageError("--processes needs a POSIX system", "Run one process per port instead")
    from chalicelib.storage import store_scheme

    if store_scheme(rt.settings.store_url) == "memory":  # each process would have its own
        raise UsageError(
            f"--processes {args.processes} needs a store the processes share, and "
            "memory:// lives inside one process (a job enqueued through one was unknown "
            "to the others)",
            "Set SPOOL_STORE_URL to sqlite:///PATH, postgresql://... or redis://..., "
            "or serve with one process",
        )
    try:
        HttpLimits.from_settings(rt.settings)  # refused here, not N times over
    except ValueError as exc:
        raise UsageError(str(exc), FIX) from None
    try:
        sockets = listening_sockets(args.host, args.port, args.processes)
    except OSError as exc:
        raise listen_failure(args.host, args.port, exc) from None
    # The server processes read the same settings from the environment: the dev key
    # and demo switch with_dev_key put there, and this process's cap on long-polls.
    env = {**os.environ, MAX_WAITS: rt.settings.text(MAX_WAITS)}
    # The worker runs here, where no /metrics is served: its families go to a file that
    # every server process reports; their cache counts are summed (local/shared_metrics.py).
    shared = SharedMetrics(rt, worker=not args.no_worker)
    supervisor = Supervisor(
        sockets,
        threads,
        env,
        store_down=lambda: store_down(rt),
        hang_seconds=hang_seconds(rt.settings),
        extra_args=shared.server_args(),
        reaped=shared.retire,
    )
    # request_stop sets a threading.Event: on StopSignals' thread, never in the handler.
    signals = StopSignals(stop=supervisor.request_stop, notice=STOPPING)
    with signals, shared:
        fresh_store.started()  # the server processes open the store too from here
        supervisor.start()
        if supervisor.stop_requested:  # during start-up: nothing served, no banner
            supervisor.stop()
            print("spool: stopped", file=sys.stderr, flush=True)
            return 0
        runtime_module.reset(rt)
        emulator = None if args.no_worker else local_worker(spool_app.app, rt)
        if emulator is not None:
            emulator.start()
        host, port = sockets[0].getsockname()[:2]
        bound, url = addresses(host, port)
        _show_banner(banner(url, rt, key, generated, emulator, args.processes, bound))
        try:
            code = supervisor.watch()
        finally:
            supervisor.stop()
            if emulator is not None:
                emulator.stop()
            runtime_module.reset(None)
    print("spool: stopped", file=sys.stderr, flush=True)
    return code

"""The job commands against a Spool server: `--url`/SPOOL_URL, `--key`/SPOOL_API_KEY.

`spool enqueue|status|jobs|cancel|dlq` open the local store unless a URL is
given; with one they go through spool_client (so they retry through a restart
or a brief store outage like any client, and an enqueue is never doubled) and
print what the local commands print: the same tables, the same `--json`, the
same exit codes. A refusal from the server becomes one `spool:` line naming
the fix, as a local failure does (`explain`).
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from chalicelib.errors import UNKNOWN_TYPE_FIX_START
from chalicelib.job_state import DEFAULT_TENANT, Attempt, JobState
from chalicelib.jsonstrict import loads_strict
from chalicelib.redact import redact_url
from local import job_commands, tables
from local.cli_errors import (
    EXIT_USAGE,
    NOT_UTF8,
    NOT_UTF8_FIX,
    CliFailure,
    UsageError,
    job_refusal_fix,
    payload_fix,
    validation_problem,
)
from local.job_commands import wait_exit, wait_limit

# spool_client (httpx) is imported when a command goes remote; the job models (pydantic)
# only to show a job as a table. A remote command loads no store: no engine to load.
if TYPE_CHECKING:
    from chalicelib.models import Job
    from spool_client import Client
    from spool_client import errors as client_errors
    from spool_client.models import Page

COMMANDS = ("enqueue", "status", "jobs", "cancel", "dlq")
# The options add_options gives `spool` and each of COMMANDS: a server and its key.
SERVER_OPTIONS = ("--url", "--key")
URL_VARIABLE = "SPOOL_URL"  # the same names spool_client reads
KEY_VARIABLE = "SPOOL_API_KEY"
REDRIVE_CHUNK = 1000
# Commands that work on the local store whatever SPOOL_URL says (`--url` is refused
# for them): with SPOOL_URL exported for the job commands, they say so on stderr. The
# worker too: in a folder without the server's store it made a new one and ran nothing,
# "done: 0 succeeded", as if the server had no jobs.
LOCAL_ONLY = ("top", "schedules", "purge", "worker")
# A person waits at a terminal: keep trying through a restart, not for minutes. Six
# tries, the pauses between them about 0.25, 0.5, 1, 2 and 4 s (each jittered down
# to half): a server that stays down is reported after 4 to 8 s (docs/client.md).
RETRY: dict[str, Any] = {
    "attempts": 6,
    "base": 0.25,
    "cap": 4.0,
    "deadline": 30.0,
    "max_retry_after": 30.0,
}
# Each try's bound, head included (see _client): the client's own default.
TIMEOUT = 15.0


def add_options(parser: argparse.ArgumentParser, *, top: bool = False) -> None:
    """--url and --key, on `spool` itself and on each job command (either place works)."""
    default = None if top else argparse.SUPPRESS
    parser.add_argument(
        "--url",
        default=default,
        help=f"a Spool server to talk to instead of the local store (also {URL_VARIABLE})",
    )
    parser.add_argument(
        "--key",
        default=default,
        help=f"the API key for --url (also {KEY_VARIABLE}); it names your tenant",
    )


def target(args: argparse.Namespace) -> str | None:
    """The server URL when this command goes remote, else None (the local store)."""
    if args.command not in COMMANDS:
        if getattr(args, "url", None) or getattr(args, "key", None):
            fix = "Drop them, or run a job command"
            if args.command == "db":  # its own --url, after `db`, names a store
                fix = (
                    "Name the store after `db`: spool db --url STORE_URL migrate, "
                    "or after its subcommand: spool db migrate --url STORE_URL "
                    "(or set SPOOL_STORE_URL)"
                )
            raise UsageError(
                f"--url and --key work with the job commands ({', '.join(COMMANDS)}), "
                f"not with `spool {args.command}`",
                fix,
            )
        return None
    # Stripped as the client strips them: a .env file with CRLF line endings, or a
    # blank SPOOL_URL, worked with Client() and was refused by the command line.
    url = (getattr(args, "url", None) or os.environ.get(URL_VARIABLE) or "").strip() or None
    if url is None and (getattr(args, "key", None) or "").strip():
        # Dropped, it sent the job to the local store under tenant `default` (and
        # listed every tenant's local jobs) where the user meant their server.
        raise UsageError(
            f"--key is a server's API key, but no server is named: without --url or "
            f"{URL_VARIABLE}, `spool {args.command}` works on the local store",
            f"Give --url URL too (or export {URL_VARIABLE}), or drop --key to use the local store",
        )
    return url


def local_store_note(command: str, store_url: str) -> str | None:
    """The one-line note for a local-only command run with SPOOL_URL set, else None.
    Not a refusal: SPOOL_URL is exported for the job commands, and these still work
    (on this machine's store); the note keeps "no jobs yet" from being read as the
    server's answer."""
    if command not in LOCAL_ONLY or not os.environ.get(URL_VARIABLE, "").strip():
        return None
    return (
        f"spool: note: `spool {command}` works on the local store named by SPOOL_STORE_URL "
        f"({redact_url(store_url)}), not on the server at {URL_VARIABLE}."
    )


def _client() -> type[Client]:
    """The client the remote commands use: each try bounded whole, its head included.

    The sync client reads a plain call on the calling thread and bounds each read, so
    a server that sent its answer's head a byte a second held `spool status` for as
    long as it liked (hours: h11 reads heads of up to 16 KiB). A library caller keeps
    that trade for speed (docs/client.md, Timeouts); a command makes a call or a few,
    so each of its tries runs as a wait's do, on a thread bounded by TIMEOUT."""
    import httpx

    from spool_client import Client

    class WholeTries(Client):
        def _exchange_here(
            self, request: httpx.Request, budget: float
        ) -> tuple[httpx.Response, bytes]:
            return self._exchange(request, budget, cut=False)

    return WholeTries


def _changed_nothing(exc: BaseException) -> bool:
    """Whether the call that failed surely changed nothing on the server: it answered a
    refusal (a 4xx: a wrong or missing key, an unknown job type, too many requests) and
    no earlier try of that call may have reached it. A command whose first call failed
    so has nothing left behind to report: its "may have been applied in part" note
    (`enqueue --count`, `dlq redrive --all`) said the opposite of the refusal below it."""
    from spool_client.errors import ApiError

    return isinstance(exc, ApiError) and 400 <= exc.status < 500 and not exc.retried_after_send


def run(args: argparse.Namespace, url: str) -> int:
    # enqueue's --tenant defaults to the local default tenant: only another one is a mistake.
    unset = DEFAULT_TENANT if args.command == "enqueue" else None
    if getattr(args, "tenant", None) not in (None, unset):
        raise UsageError(
            "--tenant is for the local store; a server's jobs belong to your key's tenant",
            "Drop --tenant, or use the key of the tenant you mean",
        )
    from spool_client import RetryPolicy

    key = (getattr(args, "key", None) or os.environ.get(KEY_VARIABLE) or "").strip() or None
    try:
        client = _client()(url, key, timeout=TIMEOUT, retry=RetryPolicy(**RETRY))
    except ValueError as exc:  # a URL without http://, a key no server could hold
        raise _client_refusal(str(exc), url) from None
    with client:
        try:
            return REMOTE[args.command](client, args)
        except UnicodeEncodeError as exc:
            if exc.reason != "surrogates not allowed":
                raise  # not an argument's: cli_errors.report names it as it is
            # bytes in argv that are not UTF-8 (surrogate-escaped)
            raise UsageError(NOT_UTF8, NOT_UTF8_FIX) from None
        except ValueError as exc:  # an empty job id, a payload that is not an object
            raise UsageError(str(exc)) from None


def _client_refusal(message: str, url: str) -> UsageError:
    """The Client's refusal of its URL or key, with the fix for the one it refused.

    A store's URL given as the server's (SPOOL_URL=sqlite:///...) is named as such, and
    shown redacted (it may hold the database's password); a URL without its scheme gets
    the one it most likely lacks."""
    if "API key" in message:
        return UsageError(message, f"Fix --key / {KEY_VARIABLE}")
    from chalicelib.config import ConfigError
    from chalicelib.storage import store_scheme

    try:
        store_scheme(url)
    except ConfigError:
        pass
    else:
        return UsageError(
            f"{redact_url(url)!r} is a store's URL, not a server's",
            f"{URL_VARIABLE} names a Spool server (http://HOST:PORT); the store's URL goes "
            f"in SPOOL_STORE_URL, and without {URL_VARIABLE} the job commands open it directly",
        )
    if "://" not in url and url.strip():
        return UsageError(message, f"Fix --url / {URL_VARIABLE}: http://{url.strip()}")
    return UsageError(message, f"Fix --url / {URL_VARIABLE}")


# -- commands ------------------------------------------------------------------------------


REMOTE_SLICE = 1_000  # jobs handed to Client.enqueue_many at a time by --count


def cmd_enqueue(client: Client, args: argparse.Namespace) -> int:
    try:
        payload = loads_strict(args.payload)
    except ValueError as exc:
        raise UsageError(
            f"--payload is not valid JSON: {exc}",
            payload_fix(args.payload, getattr(args, "payload_source", None)),
        ) from None
    if not isinstance(payload, dict):
        raise UsageError("--payload must be a JSON object", """e.g. --payload '{"a": 1}'""")
    options: dict[str, Any] = {
        "queue": args.queue,
        "priority": args.priority,
        "delay": args.delay,
        "max_attempts": args.max_attempts,
        "idempotency_key": args.idempotency_key,
    }
    if args.count == 1:
        answer = client.enqueue(args.type, payload, **options)
        tables.print_enqueued(
            {
                "id": answer.id,
                "state": answer.state,
                "created": answer.created,
                "idempotency_key": answer.idempotency_key,
            },
            args.json,
        )
        return 0
    # A slice at a time, only the ids kept (with --json): holding every job and answer
    # of a --count of 100,000 took ~100 MB.
    spec = {"type": args.type, "payload": payload, **options}
    kept: list[dict[str, Any]] = []
    sent = 0
    try:
        while sent < args.count:
            # One batch a call (the client's size, as the server's 413s taught it), so a
            # failure leaves at most that call's jobs unaccounted for.
            part = min(REMOTE_SLICE, client.batch_size, args.count - sent)
            done = client.enqueue_many([spec] * part)
            if args.json:
                kept += ({"id": d.id, "state": d.state, "created": d.created} for d in done)
            sent += len(done)
    except (Exception, KeyboardInterrupt) as exc:
        # The slices before the failure (or Ctrl-C) stay stored: say how many.
        if sent or not _changed_nothing(exc):
            job_commands.enqueue_cut_short(args, sent, kept)
        raise
    if args.json:
        tables.print_json(kept)
    print(f"enqueued {sent} jobs", file=sys.stderr)
    return 0


def cmd_status(client: Client, args: argparse.Namespace) -> int:
    from spool_client import errors as client_errors

    finished = True
    if args.wait is not None:
        try:
            _wait(client, args.id, wait_limit(args.wait))
        except client_errors.WaitTimeout:
            finished = False
    job = client.get(args.id, attempts=True)
    with tables.reader_may_leave():  # `| head` keeps the exit code (3, 4)
        if args.json:
            tables.print_json(job.raw)
        else:
            from local import status_view  # its API schemas only when a job is shown

            print(status_view.render(*_shown(job.raw), tenant="(your key's)"))
    # The job as read and shown decides: one that finished as the wait ran out, or whose
    # long-polls were lost on the way, exited 3 ("still waiting") beside its result.
    finished = finished or job.terminal
    return wait_exit(job.state, finished) if args.wait is not None else 0


def _wait(client: Client, job_id: str, limit: float | None) -> None:
    """client.wait for `limit` seconds (None: no limit), saying once, after
    WAIT_NOTE_AFTER seconds of a job still waiting, that the server has seen no worker
    (_unserved): against `spool serve --no-worker` the wait was silent until it ran out.

    One wait, the note looked up beside it on a thread: a first wait of
    WAIT_NOTE_AFTER seconds (then a second for the rest) ended its retries at that
    first bound, so a server restarting across it (down from second 1 to 4, say) failed
    `status --wait 60s` after 3 s with "cannot reach", where the same restart a few
    seconds later was ridden out. The note is printed before the wait returns or not
    at all (the lock), never after the job's status."""
    from chalicelib import logs

    after = job_commands.WAIT_NOTE_AFTER
    if limit is not None and limit <= after:
        client.wait(job_id, timeout=limit)
        return
    finished = threading.Event()
    printing = threading.Lock()

    def note() -> None:
        if finished.wait(after):
            return
        try:  # any failure (the server away, the client closed) only skips the note
            state = client.get(job_id).state
            reason = _unserved(client) if state in ("queued", "retrying") else None
        except Exception:
            return
        with printing:
            if reason is not None and not finished.is_set():
                print(f"spool: note: {job_id} is still {state}: {reason}", file=sys.stderr)

    logs.outside_thread(note, name="spool-wait-note").start()
    try:
        client.wait(job_id, timeout=limit)
    finally:
        with printing:
            finished.set()


def _unserved(client: Client) -> str | None:
    """Why nothing runs the job, as the dashboard's overview (GET /ui/api/overview, the
    key's own) counts live workers; None when it counts some, or cannot be read (a
    server without the dashboard, a refusal): the wait goes on either way."""
    from spool_client.calls import Call

    try:
        workers = client._send(Call("GET", "/ui/api/overview"))["workers"]
        live, within = int(workers["live"]), float(workers["within_seconds"])
    except Exception:
        return None
    if live:
        return None
    return (
        f"the server has seen no worker in the last {within:g} s, so nothing runs it yet "
        "(`spool serve --no-worker` runs none; a `spool worker` on the server's store "
        "does): ask the server's operator"
    )


def cmd_jobs(client: Client, args: argparse.Namespace) -> int:
    pages = client.pages(
        state=args.state,
        queue=args.queue,
        type=args.type,
        page_size=args.limit,
        cursor=args.cursor,
    )
    return _print_pages(pages, args, "job(s)")


def cmd_cancel(client: Client, args: argparse.Namespace) -> int:
    job = client.cancel(args.id)
    tables.print_job_state(job.raw, args.json, "cancelled")
    return 0


def cmd_dlq(client: Client, args: argparse.Namespace) -> int:
    if args.dlq_command == "list":
        pages = client.dead_pages(
            queue=args.queue, type=args.type, page_size=args.limit, cursor=args.cursor
        )
        return _print_pages(pages, args, "dead job(s)")
    job_commands.check_redrive_args(args)
    if args.all:
        ids: list[str] = []
        seen: set[str] = set()
        # --died-before: the bound a run cut short printed, to go on under it.
        bound: datetime | None = args.died_before
        try:
            while True:
                moved = client.redrive_all(
                    queue=args.queue, type=args.type, limit=REDRIVE_CHUNK, died_before=bound
                )
                # Every call after the first passes back the first one's bound (the
                # server's clock at its start): a job this run redrove that died again
                # since is not redriven twice, and no job dead at the start is left behind.
                bound = bound or moved.died_before
                fresh = [i for i in moved.ids if i not in seen]
                seen.update(fresh)
                ids.extend(fresh)
                # Done at a short batch. Nothing new is a guard against a server that
                # always answers a full batch (this would loop forever); one too old to
                # answer a bound brings back jobs that died again, and that ends the run.
                if moved.redriven < REDRIVE_CHUNK or not fresh:
                    break
                if bound is None and len(fresh) < len(moved.ids):
                    break
        except (Exception, KeyboardInterrupt) as exc:
            # The calls before the failure (or Ctrl-C) stay redriven: say so, and the bound.
            if ids or bound is not None or not _changed_nothing(exc):
                job_commands.redrive_cut_short(args, ids, bound)
            raise
        if args.json:
            tables.print_json({"redriven": len(ids), "ids": ids})
        print(f"redriven {len(ids)} job(s)", file=sys.stderr)
        return 0
    if not args.id:
        raise UsageError("give a job id or --all", "e.g. `spool dlq redrive --all --queue emails`")
    job = client.redrive(args.id)
    if args.json:
        tables.print_json({"id": job.id, "state": job.state})
    else:
        tables.print_job_state(job.raw, False, "redriven")
    return 0


REMOTE: dict[str, Callable[[Client, argparse.Namespace], int]] = {
    "enqueue": cmd_enqueue,
    "status": cmd_status,
    "jobs": cmd_jobs,
    "cancel": cmd_cancel,
    "dlq": cmd_dlq,
}


def _print_pages(pages: Iterator[Page], args: argparse.Namespace, noun: str) -> int:
    """One page, or with --all each page as it comes (tables.print_pages: exit 1 when
    it stopped at --max-jobs)."""
    if not args.all:
        page = next(pages)
        tables.print_page([j.raw for j in page.jobs], page.next_cursor, args.json, noun)
        return 0
    listed = (([j.raw for j in page.jobs], page.next_cursor) for page in pages)
    return 0 if tables.print_pages(listed, args.json, noun, args.max_jobs) else 1


# -- the API's JSON as the models status_view renders ------------------------------------------


def _shown(raw: dict[str, Any]) -> tuple[PlainJob | Job, list[Attempt]]:
    """The job and attempts to show, or UnexpectedResponse as the client words JSON of
    another shape: a field missing or malformed ended in pydantic's dump (exit 2, as if
    the person had typed something wrong) or "unexpected error: KeyError"."""
    from spool_client.errors import UnexpectedResponse

    try:
        return _plain_job(raw) or _as_job(raw), _attempts(raw)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:  # pydantic's is a ValueError
        raise UnexpectedResponse.shape("a job", exc) from None


def _as_job(raw: dict[str, Any]) -> Job:
    from chalicelib.models import Job

    fields = {k: v for k, v in raw.items() if k in Job.model_fields}
    return Job.model_validate({**fields, "tenant": fields.get("tenant", "-")})


@dataclass(frozen=True)
class PlainJob:
    """What status_view.render shows of a job, read from a server's answer without
    pydantic (_plain_job)."""

    id: str
    type: str
    queue: str
    priority: int
    state: JobState
    attempts: int
    max_attempts: int
    run_at: datetime
    created_at: datetime
    finished_at: datetime | None
    last_error: str | None
    result: Any
    tenant: str = "-"


# chalicelib.models.Job's fields and the JSON each takes in the shape a Spool server
# sends it (a test holds the names to Job.model_fields): "str", "int", "state", "object"
# (a JSON object), "json" (any JSON value), "time" (ISO 8601 with its offset); "?"
# after one: or null.
JOB_FIELDS = {
    "id": "str",
    "tenant": "str",
    "type": "str",
    "queue": "str",
    "priority": "int",
    "payload": "object",
    "state": "state",
    "attempts": "int",
    "max_attempts": "int",
    "run_at": "time",
    "lease_token": "str?",
    "lease_expires_at": "time?",
    "result": "json",
    "last_error": "str?",
    "idempotency_key": "str?",
    "created_at": "time",
    "updated_at": "time",
    "started_at": "time?",
    "finished_at": "time?",
}
# Without one of these the answer is read by the model (its defaults, its refusal).
_SHOWN_FIELDS = ("updated_at", *(f for f in PlainJob.__dataclass_fields__ if f != "tenant"))
_TIME = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?(Z|[+-]\d{2}:\d{2})")
_STATES = frozenset(s.value for s in JobState)


def _plain(kind: str, value: Any) -> tuple[bool, Any]:
    """(whether `value` is JSON of this kind as a server sends it, the value read)."""
    if kind.endswith("?"):
        return (True, None) if value is None else _plain(kind[:-1], value)
    if kind == "str":
        return type(value) is str, value
    if kind == "int":  # not bool, and no larger than a store keeps
        return type(value) is int and -(2**63) <= value < 2**63, value
    if kind == "state":
        return type(value) is str and value in _STATES, value
    if kind == "object":
        return type(value) is dict, value
    if kind == "time" and type(value) is str and _TIME.fullmatch(value):
        try:
            return True, datetime.fromisoformat(value)
        except ValueError:  # 23:59:60, 30 February
            return False, None
    return kind == "json", value


def _plain_job(raw: dict[str, Any]) -> PlainJob | None:
    """The job as the model reads it, when the answer has the shape a Spool server
    sends: every field shown present, each field of Job's given as the server gives it.
    None otherwise: chalicelib.models.Job (pydantic) reads it instead, with its
    defaults, coercions and refusals. pydantic and the models are a third of a remote
    `spool status ID`'s start, and the answer a server sends needs neither."""
    if any(name not in raw for name in _SHOWN_FIELDS):
        return None
    read: dict[str, Any] = {}
    for name, kind in JOB_FIELDS.items():
        if name in raw:
            ok, read[name] = _plain(kind, raw[name])
            if not ok:
                return None
    shown = {name: read[name] for name in _SHOWN_FIELDS if name != "updated_at"}
    return PlainJob(**{**shown, "state": JobState(shown["state"])})


def _attempts(raw: dict[str, Any]) -> list[Attempt]:
    return [
        Attempt(
            number=a["number"],
            started_at=datetime.fromisoformat(a["started_at"]),
            finished_at=datetime.fromisoformat(a["finished_at"]),
            worker=a["worker"],
            outcome=a["outcome"],
            error_type=a.get("error_type"),
            error=a.get("error"),
            traceback=a.get("traceback"),
            next_delay=a.get("next_delay"),
            log_tail=tuple(a.get("log_tail") or ()),
        )
        for a in raw.get("attempt_history") or []
    ]


# -- failures ----------------------------------------------------------------------------------

_KEY_FIX = f"Pass the key with --key or {KEY_VARIABLE}"
# A refused key is most often the one an earlier `make run` printed: without
# SPOOL_API_KEYS each start makes a new one, and the exported key is refused.
_REFUSED_KEY_FIX = (
    f"Pass the server's key with --key or {KEY_VARIABLE}: `spool serve` (make run) "
    "without SPOOL_API_KEYS makes a new key at each start, so use the one it printed last"
)


_TENANT_KEY_FIX = f"Pass a tenant's key with --key or {KEY_VARIABLE}"
# What a server asks of an admit check's refusal: the reason may name the payload, or
# what only the operator sets (a tenant's allowance, SPOOL_HTTP_ALLOWLIST).
_ADMIT_ADVICE = "change what its reason names, or ask the server's operator"
# A 413: the server's words give the sizes, not what to do about them.
_TOO_LARGE_FIX = (
    "Send a smaller payload: keep large data elsewhere (a blob, a bucket) and put its key "
    "in the payload; the limit is the server's SPOOL_MAX_BODY_BYTES, its operator's to raise"
)
# A 429's code for the limits on a client or tenant (too_many_waits: a busy server).
LIMITED = "rate_limited"
RETRY_AFTER_WORDS = "; retry after the time in Retry-After"
AUTH_FAILURES_WORDS = "too many failed authentications"


def explain(exc: client_errors.SpoolClientError) -> CliFailure:
    """A server's refusal (or its silence) as one line with the fix and the exit code."""
    from spool_client import errors as client_errors

    if isinstance(exc, client_errors.TransportError):
        from spool_client.retry import plain_http_answer, untrusted_certificate

        if plain_http_answer(exc):  # the message says to use http://: one try, one fix
            return CliFailure(str(exc), f"Fix --url / {URL_VARIABLE}")
        if untrusted_certificate(exc):
            return CliFailure(
                f"{exc} (the server's TLS certificate is not trusted)",
                "Point SSL_CERT_FILE at the CA bundle that signed it, "
                f"or check --url / {URL_VARIABLE}",
            )
        if exc.reached:  # it is running: "check that it is running" sent people astray
            return CliFailure(
                f"{exc} (after {exc.attempts} tries)",
                "The server is up but too slow to answer: check its load and logs, then try again",
            )
        return CliFailure(
            f"{exc} (after {exc.attempts} tries)",
            f"Check --url / {URL_VARIABLE} and that the server is running",
        )
    if isinstance(exc, client_errors.UnexpectedResponse):
        return CliFailure(str(exc), f"Check --url / {URL_VARIABLE}")
    if isinstance(exc, client_errors.AnswerTooLarge):  # its own words name a Client argument
        return CliFailure(
            f"{exc.url} sent an answer of more than {exc.limit} bytes, "
            "more than any Spool route answers",
            f"Check that --url / {URL_VARIABLE} is a Spool server's address",
        )
    if isinstance(exc, client_errors.WaitTimeout):
        return CliFailure(str(exc))
    if not isinstance(exc, client_errors.ApiError):
        return CliFailure(str(exc))
    if exc.code.startswith("http_"):  # a refusal without Spool's JSON: not Spool answering
        proxy = exc.status in (502, 503, 504)  # a gateway answering for a Spool that is down
        return CliFailure(
            f"the server answered HTTP {exc.status} ({exc.message}), not Spool's JSON",
            f"Check that --url / {URL_VARIABLE} is a Spool server's address"
            + (" and that the server behind the proxy is running" if proxy else ""),
        )
    if isinstance(exc, client_errors.Unauthorized | client_errors.Forbidden):
        if exc.message.startswith("missing API key"):  # "send it in the X-API-Key header"
            return CliFailure("no API key given: the server needs one", _KEY_FIX, EXIT_USAGE)
        from chalicelib.api.auth import INVALID_KEY

        if exc.message.startswith(INVALID_KEY):
            # The server's own advice after the colon (for curl) is _REFUSED_KEY_FIX in
            # HTTP's terms: said once, in the command line's (--key, SPOOL_API_KEY).
            # Only the stable prefix is matched, so a server with other words still fits.
            return CliFailure(INVALID_KEY, _REFUSED_KEY_FIX, EXIT_USAGE)
        if isinstance(exc, client_errors.Forbidden):  # a valid key of the wrong kind
            return CliFailure(exc.message, _TENANT_KEY_FIX, EXIT_USAGE)
        return CliFailure(exc.message, _KEY_FIX, EXIT_USAGE)
    if isinstance(exc, client_errors.UnknownJobType):
        known = _known_types(exc.details)
        problem = exc.message.partition(UNKNOWN_TYPE_FIX_START)[0]  # its own fix below
        return UsageError(problem, f"The server's job types: {known}")
    if isinstance(exc, client_errors.ValidationFailed):  # a job, or a listing's filters
        fix = job_refusal_fix(
            exc.details, "Fix the arguments and try again", "your key's tenant", _ADMIT_ADVICE
        )
        return UsageError(_first_problem(exc), fix)
    if isinstance(exc, client_errors.PayloadTooLarge):
        return UsageError(exc.message, _TOO_LARGE_FIX)
    if isinstance(exc, client_errors.BadRequest):
        return UsageError(exc.message)
    if isinstance(exc, client_errors.NotFound):
        if exc.no_route:  # --url has a path the server does not serve
            return CliFailure(
                exc.message,
                f"Check that --url / {URL_VARIABLE} is {client_errors.BASE_ADDRESS} "
                "(and the job id, if the command took one)",
            )
        job_id = exc.details["id"]
        return CliFailure(
            f"job {job_id} not found",
            f"Check the id, and that --key / {KEY_VARIABLE} is the key of the tenant that owns it",
        )
    if isinstance(exc, client_errors.Misconfigured):
        # Its message says the operator must fix a setting: no retry or wait helps.
        return CliFailure(exc.message)
    if exc.code == LIMITED:
        return _limited(exc)
    if isinstance(exc, client_errors.Unavailable | client_errors.TooManyRequests):
        return CliFailure(exc.message, "The server is busy or its store is down: try again later")
    return CliFailure(exc.message)


def _limited(exc: client_errors.ApiError) -> CliFailure:
    """A 429 rate_limited: a limit on this client or its key's tenant, not a busy or
    broken server, which the 503's fix said. The server's "retry after the time in
    Retry-After" names a header the command line's user never sees: the wait is said
    in seconds instead."""
    problem = exc.message.removesuffix(RETRY_AFTER_WORDS)
    wait = f"try again in {exc.retry_after:g} s" if exc.retry_after else "try again later"
    if problem.startswith(AUTH_FAILURES_WORDS):
        return CliFailure(
            problem,
            f"Check --key / {KEY_VARIABLE}: the server refused keys from this address "
            f"too often; {wait}",
        )
    if isinstance(exc.details, dict) and "backlog" in exc.details:
        return CliFailure(
            problem,
            "A cap on your key's tenant's waiting jobs (the server's SPOOL_TENANT_LIMITS), "
            "not a busy server: let jobs run, or ask the server's operator",
        )
    return CliFailure(
        problem,
        f"A limit on your key's tenant (the server's SPOOL_TENANT_LIMITS), not a busy "
        f"server: {wait}",
    )


def _known_types(details: Any) -> str:
    """The server's job types an unknown_job_type refusal lists, as text: a broken
    server's details (a list, types that are not strings) ended the command in a
    traceback from the join that was meant to explain it."""
    known = details.get("known") if isinstance(details, dict) else None
    if not isinstance(known, list):
        return "none"
    return ", ".join(str(name) for name in known) or "none"


def _first_problem(exc: client_errors.ApiError) -> str:
    return validation_problem(exc.message, exc.details)

"""The `spool` command line: run workers, enqueue, inspect, and manage dead letters."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import re
import sys
import threading
import time
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from chalicelib import client_text, logs
from chalicelib.config import MAX_KEY_LENGTH, MAX_PRIORITY, MIN_PRIORITY, NAME_PATTERN
from chalicelib.durations import EXAMPLES, parse_seconds
from chalicelib.edge_settings import FIX
from chalicelib.errors import BadRequest, UnknownJobType, ValidationFailed
from chalicelib.job_state import DEFAULT_TENANT, JobState
from chalicelib.jsonstrict import is_utf8
from chalicelib.redact import redact_url
from chalicelib.retry import MAX_ATTEMPTS
from chalicelib.timebounds import BOUND_TEXT, MAX_DELAY_SECONDS
from local import (
    cli_help,
    cli_ranges,
    db,
    job_commands,
    payload_source,
    remote_cli,
    serve,
    tables,
    top,
)
from local.cli_errors import (
    ADMIT_ADVICE,
    NOT_UTF8,
    NOT_UTF8_FIX,
    CliFailure,
    Parser,
    UsageError,
    check_debugging,
    check_setting_names,
    debugging,
    job_refusal_fix,
    payload_fix,
    report,
    validation_problem,
    warn_unread_settings,
)

# The engine (pydantic's models, the stores, the worker) is imported by the commands
# that open the local store, once the arguments are parsed: `spool --help`,
# `--version` and the remote commands (local/remote_cli.py) need none of it, and it
# was most of their start-up time (docs/benchmarks.md, "The command line's start").
if TYPE_CHECKING:
    from tqdm import tqdm

    from chalicelib.config import Settings
    from chalicelib.runtime import Runtime
    from chalicelib.service import EnqueueRequest
    from chalicelib.worker import Middleware, Worker, WorkerStats
    from local.fresh_store import FreshStore
    from local.worker_metrics import WorkerMetrics

WORKER_STOPPING = "stopping: finishing running jobs"

# `spool enqueue --count`: at most this many jobs a command. The API takes at most
# SPOOL_MAX_BATCH jobs a request (100 by default, 10,000 at most: config.BOUNDS), and
# --count is many such batches, stored ENQUEUE_CHUNK at a time; the local command
# keeps nothing of a stored chunk (only the ids, with --json), but `--url` goes
# through Client.enqueue_many, which holds every job and answer (~1 KB each): this
# keeps that near 100 MB. A typo such as 99999999999 is refused, not run for hours.
MAX_COUNT = 100_000
ENQUEUE_CHUNK = 500
# `dlq redrive --all` asks the service for this many dead jobs a call (it holds their
# ids; the whole jobs pass a service.REDRIVE_STEP at a time).
REDRIVE_CHUNK = 500


def build_runtime(settings: Settings | None = None) -> Runtime:
    """chalicelib.runtime.build_runtime, imported as a command opens the local store."""
    from chalicelib import runtime

    return runtime.build_runtime(settings)


def _print(data: Any) -> None:
    print(json.dumps(data, indent=2, default=str))


def duration(text: str) -> float:
    """An option's duration in seconds, in the grammar schedules use (90, 15m, 1h30m)."""
    try:
        return parse_seconds(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def delay(text: str) -> float:
    """--delay: a duration the API takes, refused here in its words, not as pydantic's
    "Input should be less than or equal to 31622400" (the same bound, in seconds)."""
    seconds = duration(text)
    if seconds > MAX_DELAY_SECONDS:
        raise argparse.ArgumentTypeError(f"{BOUND_TEXT}, not {text!r}")
    return seconds


def positive(text: str) -> int:
    return cli_ranges.whole(
        text, 1, None, "must be at least 1, not {value}", not_whole="{text!r} is not a whole number"
    )


def whole_number(low: int, high: int) -> Callable[[str], int]:
    """An option holding a whole number the API bounds (--priority, --max-attempts):
    refused here in words, not as argparse's "invalid int value" or, once parsed,
    pydantic's "Input should be less than or equal to 1000"."""

    def parse(text: str) -> int:
        return cli_ranges.whole(
            text, low, high, "must be a whole number from {low} to {high}, not {text!r}"
        )

    return parse


def thread_count(text: str) -> int:
    """--concurrency, held to SPOOL_CONCURRENCY's range: 100000 threads failed as an
    "unexpected error: can't start new thread" once jobs were claimed."""
    from chalicelib.config import BOUNDS, range_text

    value = positive(text)
    low, high, _ = BOUNDS["SPOOL_CONCURRENCY"]
    if value > high:
        raise argparse.ArgumentTypeError(f"must be {range_text(low, high)}, not {value}")
    return value


def job_count(text: str) -> int:
    """--count: 1 to MAX_COUNT."""
    value = positive(text)
    if value > MAX_COUNT:
        raise argparse.ArgumentTypeError(
            f"must be at most {MAX_COUNT} jobs a command, not {value} (run it again for more)"
        )
    return value


def tenant_name(text: str) -> str:
    """--tenant: a name an API key's tenant can have (chalicelib/api/auth.py holds
    SPOOL_API_KEYS to NAME_PATTERN). Any other would own a new job no key ever sees, and
    as the filter of status, jobs, cancel or dlq it matched nothing: `--tenant ''` (an
    unset variable) listed "0 job(s)", exit 0, as if that tenant had none."""
    if not is_utf8(text):  # argument bytes that are not UTF-8 (surrogate-escaped)
        raise argparse.ArgumentTypeError(NOT_UTF8)
    if re.fullmatch(NAME_PATTERN, text) is None:
        shown = text if len(text) <= 40 else text[:40] + "..."
        raise argparse.ArgumentTypeError(
            "a tenant is 1 to 64 letters, digits, '_', '.', ':' or '-' (the names "
            f"SPOOL_API_KEYS gives keys), not {shown!r}"
        )
    return text


def idempotency_key(text: str) -> str:
    """--idempotency-key: a key the API takes (chalicelib/service.py KeyText), refused
    here as a usage error naming the option, on the local store and through a server
    alike, before a store is made or a request sent. A control character is named by
    its code point (chalicelib/client_text.py): written out, it is what the terminal
    showing the error obeys."""
    if not is_utf8(text):  # argument bytes that are not UTF-8 (surrogate-escaped)
        raise argparse.ArgumentTypeError(NOT_UTF8)
    refused = client_text.refusal(text)
    if refused is not None:
        raise argparse.ArgumentTypeError(refused.message("the key"))
    if not 1 <= len(text) <= MAX_KEY_LENGTH:
        raise argparse.ArgumentTypeError(
            f"a key is 1 to {MAX_KEY_LENGTH} characters, not {len(text)}"
        )
    return text


def _progress_bar() -> type[tqdm]:  # type: ignore[type-arg]
    """tqdm, imported when a command shows a bar: `spool worker` starts without it."""
    from tqdm import tqdm

    return tqdm


def _waiting(rt: Runtime, states: tuple[JobState, ...], queues: Sequence[str] | None) -> int:
    """Jobs in these states, in these queues only (all queues for None): a progress
    bar's total must count what the command will actually work through."""
    return sum(
        n
        for (queue, state), n in rt.store.counts().items()
        if state in states and (queues is None or queue in queues)
    )


def _progress(bar: tqdm) -> Middleware:  # type: ignore[type-arg]
    """A middleware that ticks a progress bar as attempts finish (made here, with the
    worker imported: `spool --help` loads no worker)."""
    from chalicelib.worker import Middleware

    class Progress(Middleware):
        def after_flush(self, completions: Sequence[Any], applied: Sequence[bool]) -> None:
            bar.update(sum(1 for ok in applied if ok))

    return Progress()


def _sync_finish(rt: Runtime, args: argparse.Namespace) -> bool:
    """--sync-finish or SPOOL_SYNC_FINISH: write each completion before the next job,
    so a crash re-runs at most `concurrency` attempts (see chalicelib/worker.py).
    The variable is read strictly (ConfigError, exit 2): `ture` must not mean off."""
    env = rt.settings.flag("SPOOL_SYNC_FINISH")
    return bool(args.sync_finish) or env


def port_number(text: str) -> int:
    """A TCP port: 0 (pick a free one) to 65535."""
    return cli_ranges.whole(
        text,
        0,
        65535,
        "a port is 0 to 65535, not {value}",
        not_whole="{text!r} is not a port number",
    )


def _worker_metrics(rt: Runtime, args: argparse.Namespace) -> WorkerMetrics:
    """The worker's metrics port and Pushgateway push, checked before any job runs."""
    from local.worker_metrics import WorkerMetrics

    try:
        reporting = WorkerMetrics(rt, args.metrics_host, args.metrics_port)
    except OSError as exc:
        raise serve.listen_failure(
            args.metrics_host,
            args.metrics_port,
            exc,
            what="serve metrics",
            host_option="--metrics-host",
            port_fix="Pick another --metrics-port (0 picks a free one) or stop what is using it",
        ) from None
    except ValueError as exc:  # a malformed SPOOL_PUSH_INTERVAL or metrics setting
        raise UsageError(str(exc), "Fix the variable and start again") from None
    if reporting.server is not None and not args.quiet:
        print(f"spool worker: metrics at {reporting.server.url}", file=sys.stderr, flush=True)
    return reporting


def _worker_checks(rt: Runtime) -> None:
    from local.builtin_check import check_builtin_settings
    from local.schedule_check import checked_schedules

    checked_schedules(rt)  # it fires them: a bad one refuses the start, not every tick
    check_builtin_settings(rt)  # not every send_email job dead of a typo


def cmd_worker(rt: Runtime, args: argparse.Namespace) -> int:
    _worker_checks(rt)
    sync_finish = _sync_finish(rt, args)
    with _worker_metrics(rt, args) as reporting:
        return _run_worker(rt, args, sync_finish, reporting.wanted)


def _run_worker(
    rt: Runtime, args: argparse.Namespace, sync_finish: bool, metrics: bool = True
) -> int:
    from chalicelib import periodic
    from chalicelib.webhooks import runner as webhooks

    if args.burst:
        # Built first: a malformed SPOOL_WEBHOOKS stops the command before any job
        # runs, as it stops `spool worker` without --burst, not after every one did.
        deliverer = webhooks.deliverer(rt) if webhooks.enabled(rt.settings) else None
        if args.schedule:
            periodic.fire_due(rt.service, rt.registry, rt.store.clock, settings=rt.settings)
        due = _waiting(rt, (JobState.QUEUED, JobState.RETRYING), rt.settings.queues)
        bar = _progress_bar()(total=due, unit="job", disable=args.quiet or not sys.stderr.isatty())
        worker = rt.worker(args.concurrency, middleware=(_progress(bar),), metrics=metrics)
        worker.config.sync_finish = sync_finish
        dead_before = _waiting(rt, (JobState.DEAD,), rt.settings.queues)
        # SIGTERM and Ctrl-C stop a burst as they stop `spool worker`: it claims
        # nothing more and finishes what it holds. Without them a burst died at
        # once, leaving its claimed jobs `running` (each attempt spent, a last one
        # buried unrun) until their leases lapsed, and itself counted live.
        notice = None if args.quiet else WORKER_STOPPING
        with serve.StopSignals(stop=worker.stop, notice=notice) as signals:
            _started_here()
            stats = worker.run(burst=True)
            held_back = worker.held_back and not signals.requested
            worker.close()
            dead = _dead_since(rt, dead_before, stats.dead)
            if deliverer is not None:
                if not signals.requested:  # the webhooks of the jobs just finished;
                    deliverer.drain()  # after a stop the outbox keeps them for later
                deliverer.close()
        bar.close()
    else:
        worker = rt.worker(args.concurrency, metrics=metrics)
        worker.config.sync_finish = sync_finish
        # Worker.stop takes the worker's lock, which the run loop (this thread) holds
        # often: StopSignals calls it on a thread of its own, never in the handler.
        notice = None if args.quiet else WORKER_STOPPING
        with serve.StopSignals(stop=worker.stop, notice=notice):
            stats = _run_until_stopped(rt, args, worker)
        dead = stats.dead
        held_back = False
    if not args.quiet:
        print(
            f"done: {stats.succeeded} succeeded, {stats.retried} retried, {dead} dead, "
            f"{stats.timed_out} timed out",
            file=sys.stderr,
        )
        if held_back:
            print(HELD_BACK, file=sys.stderr)
    return 0


# A burst ends when only jobs a limit holds back are due (docs/handlers.md): said, so
# a summary of fewer jobs than were due does not read as jobs lost.
HELD_BACK = (
    "spool: due jobs are left queued: a concurrency or rate limit held them back "
    "(the handler's @handler(concurrency=, rate=) or SPOOL_LIMITS). "
    "Run the worker again once the limit has room, or without --burst to wait for it."
)


def _status_line(text: str) -> None:
    """The worker's banner on stderr, or nothing when stderr's reader is gone.

    A BrokenPipeError there reached main(), which reads it as `spool jobs | head`
    (the reader had all it wanted) and exits 0: a worker whose log pipe was closed
    as it started ran no job and exited as if done, so a supervisor restarting it
    only on failure never did. Closed later, the pipe only costs the log lines (the
    logging module drops what it cannot write) and the worker runs on; now the same
    holds from the first line."""
    with contextlib.suppress(BrokenPipeError):
        print(text, file=sys.stderr, flush=True)


def _started_here() -> None:
    """The worker runs: its store is kept (local/fresh_store.py), and one it made just
    now is said, with --quiet too (it is no banner): it may not be the server's."""
    from local import fresh_store

    fresh_store.started()
    note = fresh_store.made_note()
    if note is not None:
        _status_line(note)


def _types_text(rt: Runtime) -> str:
    """The start line's job types: whether the SPOOL_HANDLERS module was picked up."""
    types = rt.registry.types()
    return f"{len(types)} job types: {serve.listed_types(types)}"


def _run_until_stopped(rt: Runtime, args: argparse.Namespace, worker: Worker) -> WorkerStats:
    """`spool worker` without --burst: the pool, the scheduler (unless --no-schedule: a
    worker draining an old store beside another store's workers would fire every tick
    a second time, into the old one) and webhook delivery."""
    from chalicelib import periodic
    from chalicelib.webhooks import runner as webhooks

    if not args.quiet:
        _status_line(
            f"spool worker: concurrency {worker.config.concurrency}, "
            f"store {redact_url(rt.settings.store_url)}, {_types_text(rt)}"
            + ("" if args.schedule else ", schedules off (--no-schedule)")
        )
    stop_schedules = threading.Event()
    if args.schedule:
        logs.outside_thread(
            periodic.run_scheduler,
            args=(rt.service, stop_schedules, rt.registry),
            kwargs={"settings": rt.settings},
            name="spool-periodic",
        ).start()
    hooks = webhooks.start_thread(rt)  # webhook delivery on its own threads
    _started_here()
    try:
        return worker.run()
    finally:
        stop_schedules.set()
        if hooks is not None:
            hooks.stop()


def _dead_since(rt: Runtime, before: int, counted: int) -> int:
    """Jobs that went dead during a burst, however they got there. The worker counts
    the attempts it ended; the store also buries, as it claims, a job whose last
    attempt's lease lapsed (storage/base.py), and no attempt of this worker ends
    that one. The store's count can include jobs another process buried meanwhile:
    a summary that says more died is the safer mistake than "0 dead"."""
    return max(counted, _waiting(rt, (JobState.DEAD,), rt.settings.queues) - before)


def _payload(text: str, source: str | None = None) -> Any:
    """--payload read as the HTTP edge reads a body (api/http.py parse_json): UTF-8
    only, strict JSON. Argument bytes that are not UTF-8 arrive as lone surrogates.
    `source` names the file (or standard input) the text was read from, if any."""
    from chalicelib.api.http import parse_json

    try:
        body = text.encode("utf-8")
    except UnicodeEncodeError:
        raise UsageError(f"--payload: {NOT_UTF8}", NOT_UTF8_FIX) from None
    try:
        # No size limit: SPOOL_MAX_BODY_BYTES bounds an HTTP request, not a job.
        return parse_json(body, len(body))
    except BadRequest as exc:
        reason = exc.details.get("reason") if isinstance(exc.details, dict) else None
        problem = exc.message.split(":")[0].replace("request body", "--payload")
        fix = payload_fix(text, source)
        raise UsageError(f"{problem}: {reason}" if reason else problem, fix) from None


def _job_problem(exc: ValidationFailed) -> str:
    """The HTTP edge's refusal of a job as one line: its message and first errors."""
    return validation_problem(exc.message, exc.details, where="job")


def _enqueue_request(rt: Runtime, args: argparse.Namespace) -> EnqueueRequest:
    """The job, checked as `POST /enqueue` checks it (api/routes.py): strictly, with
    the handler's payload model and its admit check for --tenant, so this stores
    nothing the API would refuse, and a refusal is made before a new store is created
    (_check_before_creating_the_store): the admit check ran only in the service, once
    the SQLite file had been made.

    The check runs once per command: the job it passes is kept on `args`
    (CHECKED_JOB), which cmd_enqueue then stores with the service told it is admitted.
    It ran two or three times (here on the memory store, here again, in the service),
    and an admit hook with an effect, a quota each job spends, was charged for each."""
    from chalicelib.api import routes

    checked: EnqueueRequest | None = getattr(args, CHECKED_JOB, None)
    if checked is not None:
        return checked

    fields: dict[str, Any] = {
        "type": args.type,
        "payload": _payload(args.payload, getattr(args, "payload_source", None)),
    }
    for name in ("queue", "priority", "delay", "idempotency_key", "max_attempts"):
        value = getattr(args, name)
        if value is not None:
            fields[name] = value
    try:
        request = routes._enqueue_request(fields, ())
        routes._check_payload(rt.registry, request, ())
        rt.registry.get(request.type).validate(request.payload, args.tenant)
    except UnknownJobType:
        raise  # a ValidationFailed too; cli_errors names the known types and SPOOL_HANDLERS
    except ValidationFailed as exc:
        whose = f"tenant {args.tenant!r} (--tenant)"
        fix = job_refusal_fix(exc.details, "Fix the job and try again", whose, ADMIT_ADVICE)
        raise UsageError(_job_problem(exc), fix) from None
    setattr(args, CHECKED_JOB, request)
    return request


# Where _enqueue_request keeps the job it checked (and admitted) on the command's args.
CHECKED_JOB = "checked_job"


def unserved_note(rt: Runtime, queue: str) -> str | None:
    """Why nothing may run a job on `queue`: no worker's heartbeat within
    SPOOL_WORKER_LIVE_SECONDS (what `spool top` and the dashboard count as live), or none
    taking that queue; None when one does. The local enqueue printed `queued` and
    nothing more, so a new user who had not started a worker waited for ever.

    One read of the store's heartbeats, on the command line only (a server's enqueue
    reads nothing more). Never fails the command: a store that cannot say stays silent."""
    from chalicelib.attempt_record import live_seconds

    within = live_seconds(rt.settings)
    try:
        workers = rt.store.live_workers(within)
    except Exception:
        return None
    if any(w.queues is None or queue in w.queues for w in workers):
        return None
    if workers:
        taken = sorted({q for w in workers for q in w.queues or ()})
        return (
            f"no live worker takes queue {queue!r} (those seen in the last {within:g} s "
            f"take {', '.join(taken)}): start one for it with "
            f"`SPOOL_QUEUES={queue} spool worker`"
        )
    return (
        f"no worker has been seen on this store in the last {within:g} s, so nothing "
        "runs its jobs yet: start one with `spool worker` (same SPOOL_STORE_URL), or "
        "run `spool serve`, whose built-in worker runs it"
    )


def _note_unserved(rt: Runtime, queue: str) -> None:
    note = unserved_note(rt, queue)
    if note is not None:
        print(f"spool: note: {note}", file=sys.stderr)


def cmd_enqueue(rt: Runtime, args: argparse.Namespace) -> int:
    """Store the job, or `--count` copies of it: one command, one admit check (the
    copies are the same job for the same tenant), made by _enqueue_request."""
    request = _enqueue_request(rt, args)
    if args.count == 1:
        result = rt.service.enqueue([request], args.tenant, admitted=True)[0]
        tables.print_enqueued(
            {
                "id": result.job.id,
                "state": result.job.state.value,
                "created": result.created,
                "idempotency_key": result.job.idempotency_key,
                "tenant": result.job.tenant,
            },
            args.json,
        )
        _note_unserved(rt, result.job.queue)
        return 0
    # Only --json keeps anything, and only the ids: a stored chunk's jobs are let go.
    added: list[dict[str, Any]] = []
    stored = 0
    with _progress_bar()(total=args.count, unit="job", disable=not sys.stderr.isatty()) as bar:
        try:
            for start in range(0, args.count, ENQUEUE_CHUNK):
                n = min(ENQUEUE_CHUNK, args.count - start)
                results = rt.service.enqueue([request] * n, args.tenant, admitted=True)
                queue = results[0].job.queue
                if args.json:  # the ids, as remotely (local/remote_cli.py)
                    added += (
                        {"id": r.job.id, "state": r.job.state.value, "created": r.created}
                        for r in results
                    )
                del results
                stored += n
                bar.update(n)
        except (Exception, KeyboardInterrupt):
            # The chunks before the failure (or Ctrl-C) stay stored: say how many.
            job_commands.enqueue_cut_short(args, stored, added)
            raise
    if args.json:
        _print(added)
    print(f"enqueued {args.count} jobs (tenant {args.tenant})", file=sys.stderr)
    _note_unserved(rt, queue)
    return 0


def cmd_schedules(rt: Runtime, args: argparse.Namespace) -> int:
    """Each enabled schedule and its next tick, so an operator can see what fires when.

    A schedule whose job could never be enqueued (unknown type, a payload its
    handler refuses) fails the command, as it would fail every tick.
    """
    from chalicelib import periodic
    from local.schedule_check import checked_schedules

    schedules = checked_schedules(rt)
    upcoming = periodic.next_runs(rt.store.clock, schedules=schedules)
    rows = [
        {
            "name": s.name,
            "type": s.type,
            "when": s.cron if s.cron is not None else f"every {s.every}s",
            "tz": s.tz,
            "next_run": upcoming[s.name].isoformat(),
        }
        for s in schedules
    ]
    if args.json:
        _print(rows)
    elif not rows:
        print("no enabled schedules (SPOOL_SCHEDULES and @periodic)")
    else:
        columns = ("name", "type", "when", "tz", "next_run")
        cells = ([tables.printable(r[c]) for c in columns] for r in rows)
        for line in tables.table(columns, cells):
            print(line)
    return 0


def cmd_status(rt: Runtime, args: argparse.Namespace) -> int:
    """The job and its attempts: a table for people, JSON with --json (local/status_view.py)."""
    from local import status_view

    if args.wait is None:
        job = rt.service.status(args.id, args.tenant)
    else:
        job = job_commands.wait_local(
            rt,
            args.id,
            args.tenant,
            job_commands.wait_limit(args.wait),
            lambda waiting: unserved_note(rt, waiting.queue),
        )
    from chalicelib.storage.stored_rows import attempts_or_marker

    attempts, marker = attempts_or_marker(rt.store, job.id, args.tenant) or ([], None)
    with tables.reader_may_leave():  # `| head` keeps the exit code (3, 4)
        if args.json:
            _print(status_view.as_json(job, attempts, marker))
        else:
            why = None if marker is None else marker["message"]
            print(status_view.render(job, attempts, history_error=why))
    return 0 if args.wait is None else job_commands.wait_exit(job.state.value, job.terminal)


def cmd_dlq(rt: Runtime, args: argparse.Namespace) -> int:
    if args.dlq_command == "list":
        return job_commands.list_local(rt, args, JobState.DEAD, "dead job(s)")
    job_commands.check_redrive_args(args)
    if args.all:
        # Counts are per queue, not per tenant or type: with either the total is unknown.
        total = (
            None
            if args.tenant is not None or args.type is not None
            else _waiting(rt, (JobState.DEAD,), None if args.queue is None else (args.queue,))
        )
        moved: list[str] = []
        # Only jobs dead when the command began: one it redrove that died again since
        # is not met again, so none is redriven twice and none dead at the start is
        # left behind by a stop that took it for done. The same bound as POST
        # /dlq/redrive's first call (remote_cli.cmd_dlq passes that one back).
        # --died-before: a run cut short names its bound, to go on under it.
        bound = args.died_before or rt.service.redrive_bound()
        with _progress_bar()(total=total, unit="job", disable=not sys.stderr.isatty()) as bar:
            seen: set[str] = set()
            try:
                while True:
                    # Ids only, as each step is redriven: service.redriving hands whole
                    # jobs (each may carry a 256 KiB payload) a REDRIVE_STEP at a time;
                    # kept as each is yielded, so a failure later in the chunk loses none.
                    batch = fresh = 0
                    for job in rt.service.redriving(
                        args.tenant,
                        queue=args.queue,
                        type_=args.type,
                        limit=REDRIVE_CHUNK,
                        died_before=bound,
                    ):
                        batch += 1
                        if job.id not in seen:
                            fresh += 1
                            seen.add(job.id)
                            moved.append(job.id)
                            bar.update(1)
                    # A short batch: the listing ended. Nothing new: a guard, should a
                    # store ever answer the same jobs again (this would loop forever).
                    if batch < REDRIVE_CHUNK or not fresh:
                        break
            except (Exception, KeyboardInterrupt):
                # The steps before the failure (or Ctrl-C) stay redriven: say so, and the bound.
                job_commands.redrive_cut_short(args, moved, bound)
                raise
        if args.json:
            _print({"redriven": len(moved), "ids": moved})
        print(f"redriven {len(moved)} job(s)", file=sys.stderr)
        return 0
    if not args.id:
        raise UsageError("give a job id or --all", "e.g. `spool dlq redrive --all --queue emails`")
    job = rt.service.redrive(args.id, args.tenant)
    if args.json:
        _print({"id": job.id, "state": job.state.value})
    else:
        tables.print_job_state(job_commands.job_json(job), False, "redriven")
    return 0


def cmd_purge(rt: Runtime, args: argparse.Namespace) -> int:
    cutoff = rt.store.clock.now() - timedelta(seconds=args.older_than)
    total = 0
    while True:
        n = rt.store.purge(cutoff, 1000)
        total += n
        if n < 1000:
            break
    print(f"purged {total} finished job(s)", file=sys.stderr)
    return 0


def _tenant_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--tenant",
        type=tenant_name,
        default=None,
        help=f"only this tenant's jobs (default: every tenant; the CLI and `spool serve` "
        f"use {DEFAULT_TENANT!r})",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="spool",
        description="Spool job queue",
        epilog=job_commands.EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action=cli_help.Version)
    remote_cli.add_options(parser, top=True)
    sub = parser.add_subparsers(dest="command", required=True)

    worker = sub.add_parser("worker", help="run jobs")
    worker.add_argument(
        "--concurrency",
        type=thread_count,
        default=None,
        help="jobs this process runs at once, each on a thread (default: SPOOL_CONCURRENCY, 8)",
    )
    worker.add_argument(
        "--burst",
        action="store_true",
        help="exit when nothing is due: a job retrying later, even a moment later, or "
        "delayed, is left for the next run (spool jobs --state retrying lists them), "
        "and so are due jobs a concurrency or rate limit holds back (the summary says so)",
    )
    worker.add_argument(
        "--no-schedule",
        dest="schedule",
        action="store_false",
        help="fire no periodic schedules (by default a worker fires them): for a worker "
        "draining an old store while another store's workers fire them "
        "(docs/self-hosting.md, moving from SQLite)",
    )
    worker.add_argument(
        "--quiet",
        action="store_true",
        help="no progress bar, banner or summary on stderr (the log lines stay)",
    )
    worker.add_argument(
        "--sync-finish",
        action="store_true",
        help="write each result before taking the next job (at most CONCURRENCY "
        "attempts re-run after a crash; slower). Also SPOOL_SYNC_FINISH=1",
    )
    worker.add_argument(
        "--metrics-port",
        type=port_number,
        default=None,
        metavar="PORT",
        help="serve Prometheus metrics at http://HOST:PORT/metrics (no authentication: "
        "keep it on a private network; 0 picks a free port)",
    )
    worker.add_argument(
        "--metrics-host",
        default="127.0.0.1",
        metavar="HOST",
        help="address the metrics port binds (default 127.0.0.1; 0.0.0.0 in a container)",
    )

    enqueue = sub.add_parser("enqueue", help="add a job")
    enqueue.add_argument(
        "type",
        type=job_commands.filter_name("job type"),
        help="the job type: a registered handler's name",
    )
    enqueue.add_argument(
        "--payload",
        default="{}",
        help="the job's payload, a JSON object (default {}); @FILE reads it from a file, "
        "- from standard input",
    )
    enqueue.add_argument(
        "--queue",
        type=job_commands.filter_name("queue"),
        help="the queue to put it on (default: the handler's)",
    )
    enqueue.add_argument(
        "--priority",
        type=whole_number(MIN_PRIORITY, MAX_PRIORITY),
        help=f"higher runs first, {MIN_PRIORITY} to {MAX_PRIORITY} "
        "(default: the handler's, usually 0)",
    )
    enqueue.add_argument(
        "--delay", type=delay, help=f"run no sooner than this ({BOUND_TEXT}): {EXAMPLES}"
    )
    enqueue.add_argument(
        "--idempotency-key",
        dest="idempotency_key",
        type=idempotency_key,
        help="the same key again answers the job it first made instead of adding another "
        f"(1 to {MAX_KEY_LENGTH} characters, no control character)",
    )
    enqueue.add_argument(
        "--max-attempts",
        dest="max_attempts",
        type=whole_number(1, MAX_ATTEMPTS),
        help=f"tries before the job goes dead, 1 to {MAX_ATTEMPTS} (default: the handler's); "
        "more than SPOOL_MAX_ATTEMPTS (25 unless set) or the handler's own is refused",
    )
    enqueue.add_argument(
        "--tenant",
        type=tenant_name,
        default=DEFAULT_TENANT,
        help=f"the tenant owning the job (default {DEFAULT_TENANT!r}, the tenant of "
        "`spool serve`'s dev key; a name an API key's tenant can have)",
    )
    enqueue.add_argument(
        "--count",
        type=job_count,
        default=1,
        help=f"add this many copies (1 to {MAX_COUNT}, default 1; above 1, not with "
        "--idempotency-key: a key names one job)",
    )
    enqueue.add_argument("--json", action="store_true", help="machine output")
    remote_cli.add_options(enqueue)

    status = sub.add_parser(
        "status",
        help="show a job and its attempts",
        epilog=job_commands.EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    status.add_argument("id", help="the job's id (j_...), as enqueue printed it")
    status.add_argument(
        "--json", action="store_true", help="machine output: the job, with attempt_history"
    )
    status.add_argument(
        "--wait",
        type=duration,
        nargs="?",
        const=job_commands.NO_LIMIT,  # `--wait` alone; `--wait 0` is at most 0 s: look once
        default=None,
        metavar="TIME",
        help="first wait until the job finishes, at most TIME (no limit without one); "
        "the exit code then tells how it ended (see below)",
    )
    _tenant_option(status)
    remote_cli.add_options(status)

    jobs = sub.add_parser("jobs", help="list jobs, oldest first (a page; --all for every one)")
    jobs.add_argument("action", nargs="?", choices=["list"], default="list", help=argparse.SUPPRESS)
    jobs.add_argument(
        "--state", choices=job_commands.state_choices(), help="only jobs in this state"
    )
    job_commands.list_options(jobs)
    _tenant_option(jobs)
    remote_cli.add_options(jobs)

    cancel = sub.add_parser("cancel", help="cancel a waiting (queued or retrying) job")
    cancel.add_argument("id", help="the job's id (j_...)")
    cancel.add_argument("--json", action="store_true", help="machine output: the job")
    _tenant_option(cancel)
    remote_cli.add_options(cancel)

    dlq = sub.add_parser("dlq", help="dead letters")
    dlq_sub = dlq.add_subparsers(dest="dlq_command", required=True)
    dlq_list = dlq_sub.add_parser(
        "list", help="a page of dead jobs, oldest first (--all: every one)"
    )
    job_commands.list_options(dlq_list)
    _tenant_option(dlq_list)
    remote_cli.add_options(dlq_list)
    redrive = dlq_sub.add_parser(
        "redrive", help="put a dead job (or --all of them) back to queued with fresh attempts"
    )
    redrive.add_argument("id", nargs="?", help="the dead job's id (or --all)")
    redrive.add_argument(
        "--all",
        action="store_true",
        help="every job dead when the command starts, each once (one that dies again "
        "meanwhile is left for the next run)",
    )
    redrive.add_argument(
        "--queue",
        type=job_commands.filter_name("queue"),
        help="with --all: only dead jobs of this queue",
    )
    redrive.add_argument(
        "--type",
        type=job_commands.filter_name("type"),
        help="with --all: only dead jobs of this type",
    )
    redrive.add_argument(
        "--died-before",
        type=job_commands.died_before,
        metavar="TIME",
        help="with --all: only jobs that died before TIME (ISO 8601 with its offset), "
        "in place of the time the command starts: the bound a run cut short printed, so "
        "running it again redrives none of its jobs twice",
    )
    redrive.add_argument("--json", action="store_true", help="machine output")
    _tenant_option(redrive)
    remote_cli.add_options(redrive)

    purge = sub.add_parser("purge", help="delete old finished jobs (every tenant)")
    purge.add_argument(
        "--older-than",
        type=duration,
        default=7 * 86400,
        help=f"finished at least this long ago (default 7d): {EXAMPLES}",
    )

    schedules = sub.add_parser(
        "schedules", help="the enabled periodic schedules and their next run (UTC)"
    )
    schedules.add_argument("--json", action="store_true", help="print JSON, not a table")
    top.add_arguments(sub.add_parser("top", help="the overview, live in the terminal"))

    serve.add_arguments(sub.add_parser("serve", help="serve the API (and an emulated worker)"))
    db.add_arguments(sub.add_parser("db", help="database schema: migrate, status (Postgres)"))
    cli_help.describe(parser)
    return parser


COMMANDS: dict[str, Callable[[Runtime, argparse.Namespace], int]] = {
    "worker": cmd_worker,
    "enqueue": cmd_enqueue,
    "status": cmd_status,
    "jobs": job_commands.cmd_jobs,
    "cancel": job_commands.cmd_cancel,
    "dlq": cmd_dlq,
    "purge": cmd_purge,
    "serve": serve.cmd_serve,
    "schedules": cmd_schedules,
    "top": top.cmd_top,
}


LOGGING_COMMANDS = ("worker", "serve")


def _import_from_working_directory() -> None:
    """SPOOL_HANDLERS modules are found in the working directory, as with `python -m`:
    the `spool` script's own sys.path[0] is the venv's bin/, not where the user is."""
    try:
        here = os.getcwd()
    except FileNotFoundError:  # deleted under the shell: there is nothing to import
        return
    if "" not in sys.path and here not in sys.path:
        sys.path.insert(0, here)


# Commands that only look at jobs already stored: on a SQLite file that does not
# exist they have nothing to show, and opening it would leave an empty store behind.
READING_COMMANDS = ("status", "jobs", "cancel", "dlq", "purge", "top")


def _missing_sqlite_file(url: str) -> str | None:
    """The path of the SQLite file `url` names when no such file exists, else None
    (another store, or a malformed URL: build_runtime reports that itself)."""
    from chalicelib.storage import sqlite_path

    if not url.startswith("sqlite:"):
        return None
    from chalicelib.storage.sqlite import synchronous_option

    try:
        path, options = sqlite_path(url)
        synchronous_option(options)  # a bad option is the mistake to name, not the file
    except ValueError:
        return None
    if path == ":memory:" or os.path.exists(path):
        return None
    return path


def _refuse_missing_store(command: str) -> None:
    """`spool top` in the wrong folder used to create `.spool/spool.db` there and show
    "no jobs yet", which reads as "the server has none": say where it looked instead.
    A usage error (exit 2), as any setting naming the wrong thing: SPOOL_STORE_URL (or
    the working directory) points where there is no store."""
    if command not in READING_COMMANDS:
        return
    from chalicelib.config import Settings

    url = Settings.from_env().store_url
    path = _missing_sqlite_file(url)
    if path is None:
        return
    raise UsageError(
        f"no Spool store at {os.path.abspath(path)} (SPOOL_STORE_URL "
        f"{redact_url(url)}): nothing has stored a job there yet",
        "Run the command in the folder `make run` (or `spool serve`) runs in, or set "
        "SPOOL_STORE_URL to the store's file; with SPOOL_URL set, job commands ask "
        "the server instead",
    )


def _refuse_store_gone_from_under_a_supervisor(args: argparse.Namespace) -> None:
    """A server process of `spool serve --processes N` (started with --listen-fd) never
    makes a SQLite store: its supervisor opened the store (making it if need be) before
    starting it. A file missing by then was deleted or moved while Spool ran; a
    replacement server process made a new, empty one at the path and answered 201 for
    jobs no worker ran, beside the others' 503s. Refused instead: the supervisor
    restarts it while its own store says the file is gone (store_down)."""
    if args.command != "serve" or getattr(args, "listen_fd", None) is None:
        return
    from chalicelib.config import Settings

    path = _missing_sqlite_file(Settings.from_env().store_url)
    if path is None:
        return
    raise CliFailure(
        f"the SQLite file {os.path.abspath(path)} this server opened is gone from its "
        "path (deleted, or its folder moved or renamed, while Spool ran): a server "
        "process makes no new, empty store there",
        "Put the file back, or stop spool serve and start it again (docs/operations.md)",
    )


def _refuse_memory_store(command: str) -> None:
    """`SPOOL_STORE_URL=memory:// spool enqueue echo` said "created" and lost the job
    as it exited; the reading commands there always showed an empty store. The store
    lives inside one process: `serve` and `worker` keep it (they run what is in it)."""
    if command not in (*READING_COMMANDS, "enqueue"):
        return
    from chalicelib.config import Settings
    from chalicelib.storage import store_scheme

    try:
        memory = store_scheme(Settings.from_env().store_url) == "memory"
    except ValueError:  # a malformed URL: build_runtime names the mistake
        return
    if memory:
        action = "store a job and lose it" if command == "enqueue" else "read an empty store"
        raise UsageError(
            f"SPOOL_STORE_URL is memory://, a store that lives inside one process: "
            f"`spool {command}` would {action} as it exits",
            "Set SPOOL_STORE_URL to the store `spool serve` and your workers use, or "
            "SPOOL_URL (and SPOOL_API_KEY) to a server",
        )


def _schedules_settings() -> Settings | None:
    """`spool schedules` answers from the settings (SPOOL_SCHEDULES, the handlers) and
    reads no job: where SPOOL_STORE_URL names a SQLite file that does not exist, it runs
    on a memory store rather than leave an empty file behind (it used to). It still
    works there: it is how a schedule is checked before anything is stored."""
    from dataclasses import replace

    from chalicelib.config import Settings

    settings = Settings.from_env()
    if _missing_sqlite_file(settings.store_url) is None:
        return None
    return replace(settings, store_url="memory://")


def _check_before_creating_the_store(args: argparse.Namespace) -> None:
    """Where SPOOL_STORE_URL names a SQLite file that does not exist yet, make the
    checks of settings and input a command would make first on a memory store, so a
    refusal leaves no empty store behind (`spool enqueue echo` in a new terminal, without
    SPOOL_URL, used to; `spool top` there then showed an empty store instead of none).
    build_runtime loads the handler modules before the store for the same reason. A
    command that passes goes on, and creates the store."""
    if args.command not in ("enqueue", "worker", "serve"):
        return
    from dataclasses import replace

    from chalicelib.config import Settings

    settings = Settings.from_env()
    if _missing_sqlite_file(settings.store_url) is None:
        return
    if args.command == "serve":
        settings = serve.laptop_handlers(settings)
    rt = build_runtime(replace(settings, store_url="memory://"))
    try:
        if args.command == "enqueue":
            _enqueue_request(rt, args)
        elif args.command == "worker":
            _worker_checks(rt)
        else:
            serve.check_worker_side(rt, args)
    finally:
        rt.close()


def _named_store(rt: Runtime) -> str:
    """The store SPOOL_STORE_URL names, for notes: `schedules` may run on a memory
    store in its place (_schedules_settings), which is not the one to name."""
    from chalicelib.config import Settings

    return (
        Settings.from_env().store_url
        if rt.settings.store_url == "memory://"
        else (rt.settings.store_url)
    )


def _refuse_copies_under_one_key(args: argparse.Namespace) -> None:
    """`spool enqueue --count 5 --idempotency-key K` stored one job (a key names one
    job: the copies after the first were answered by it), printed "enqueued 5 jobs"
    and, with --json, the one id five times, on the local store and through a server
    alike. Refused before any store is opened or request sent (exit 2)."""
    if args.command != "enqueue" or args.count == 1 or args.idempotency_key is None:
        return
    raise UsageError(
        f"--count {args.count} with --idempotency-key: a key names one job, so the "
        f"{args.count} copies would be one job",
        "Drop --idempotency-key to add that many jobs, or --count to add one job under the key",
    )


def _run(args: argparse.Namespace) -> int:
    _refuse_copies_under_one_key(args)  # locally and through a server alike
    if args.command == "enqueue":  # @FILE or -: read once, for either path
        payload_source.resolve(args)
    url = remote_cli.target(args)  # first: `spool --url X db` names a server, not a store
    if args.command == "db":  # before build_runtime: an unmigrated store refuses to open
        return db.cmd_db(args)
    if url is not None:  # --url or SPOOL_URL: a server's jobs, no local store opened
        return remote_cli.run(args, url)
    try:
        os.getcwd()  # the store's default path and SPOOL_HANDLERS are found from here
    except FileNotFoundError:
        raise CliFailure(
            "the working directory no longer exists (it was deleted while in use)",
            "cd to a directory that exists, then run the command again",
        ) from None
    _refuse_missing_store(args.command)
    _refuse_store_gone_from_under_a_supervisor(args)
    _refuse_memory_store(args.command)
    if args.command == "serve":
        from chalicelib.config import Settings

        serve.check_keys_before_opening(Settings.from_env())
    _check_before_creating_the_store(args)
    memory = _schedules_settings() if args.command == "schedules" else None
    fresh = _fresh_store(args.command)
    succeeded = False
    try:
        rt = build_runtime() if memory is None else build_runtime(memory)
    except BaseException:
        fresh.remove()  # a store half made (opened, then refused): made here, so gone
        raise
    try:
        note = remote_cli.local_store_note(args.command, _named_store(rt))
        if note is not None:  # SPOOL_URL is set, but this command cannot follow it
            print(note, file=sys.stderr, flush=True)
        if args.command in ("serve", "worker"):
            from chalicelib import limit_settings

            try:  # before the probe: a typo needs no connection to the store
                limit_settings.validate(rt.settings)
            except ValueError as exc:
                raise UsageError(str(exc), FIX) from None
            probe = getattr(rt.store, "probe", None)
            if probe is not None:  # a store that connects lazily (DynamoDB): reach it now
                probe()
        code = COMMANDS[args.command](rt, args)
        succeeded = code == 0
        return code
    finally:
        rt.close()
        if not succeeded:
            fresh.remove()  # nothing once the command had started (fresh_store.started)


def _fresh_store(command: str) -> FreshStore:
    """`serve` and `worker` open their store before their last start-up checks (a bind,
    the store's probe, the edge's settings): a start refused there removes the SQLite
    store it created (local/fresh_store.py). Other commands create none, or keep it."""
    from local import fresh_store

    if command not in ("serve", "worker"):
        return fresh_store.guard(None)
    from chalicelib.config import Settings

    return fresh_store.guard(_missing_sqlite_file(Settings.from_env().store_url))


def main(argv: Sequence[str] | None = None) -> int:
    """Parse, run, and turn any failure into one `spool: <problem>. <fix>` line."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exit:  # --help (0) or a usage error already reported (2)
        return exit.code if isinstance(exit.code, int) else 2
    _import_from_working_directory()
    try:
        check_debugging()  # SPOOL_DEBUG=ture is refused, not silently off
        check_setting_names()  # a misspelt setting's name too: nothing would read it
        # Job and request lines are what `worker` and `serve` are for; a one-shot
        # command prints its answer, and logs only warnings unless SPOOL_LOG_LEVEL asks.
        logs.configure(default_level="INFO" if args.command in LOGGING_COMMANDS else "WARNING")
        if args.command in LOGGING_COMMANDS:
            # A SPOOL_* name too far from any setting to refuse; once, by the process
            # started: not again by each server process of `spool serve --processes N`.
            if getattr(args, "supervisor_pid", None) is None:
                warn_unread_settings()
            # A handler that crashes the interpreter (a C extension's segfault) took
            # `spool serve` or `spool worker` down without a line naming it: the fault
            # now prints every thread's stack, the handler's frame among them.
            import faulthandler

            # A stderr with no descriptor (a test's capture) has no fault output.
            with contextlib.suppress(OSError, ValueError, AttributeError):
                faulthandler.enable()
        return _run(args)
    except BrokenPipeError:
        # The reader stopped early (`spool jobs | head`): what it read was all it
        # wanted. Point stdout at /dev/null so the exit's final flush cannot fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except (Exception, KeyboardInterrupt) as exc:
        if debugging():
            raise
        return report(exc)


# Seconds `spool` waits at exit for threads a handler started and left running.
STRAY_THREAD_GRACE = 5.0


def escape_what_the_terminal_cannot_show() -> None:
    """Print a character stdout's encoding cannot hold as a backslash escape (\\xe9).

    A terminal or pipe in ASCII or Latin-1 (PYTHONIOENCODING, a non-UTF-8 LC_ALL, a
    Windows console's output sent to a file) refused any job text past it, and `spool
    top`'s own sparkline: the command failed with "unexpected error:
    UnicodeEncodeError" (against a server, with "an argument holds bytes that are not
    UTF-8 text") instead of showing the job. stderr already escapes (Python's default
    there); `--json` is ASCII whatever the encoding."""
    reconfigure = getattr(sys.stdout, "reconfigure", None)
    if reconfigure is not None:
        with contextlib.suppress(ValueError, OSError):  # a closed or unusual stream
            reconfigure(errors="backslashreplace")


def console() -> None:
    """The `spool` command: main(), then an exit that does not wait forever.

    Python waits at exit for every non-daemon thread, and a handler may start one of
    its own and leave it running: `spool worker` printed `done:` after SIGTERM and
    then hung, saying nothing, until a second signal. Such threads get
    STRAY_THREAD_GRACE seconds, then are named and left behind. (main() alone, as
    tests call it in process, never exits the interpreter.)"""
    escape_what_the_terminal_cannot_show()
    code = main()
    stray = [
        t
        for t in threading.enumerate()
        if t is not threading.current_thread() and not t.daemon and t.is_alive()
    ]
    deadline = time.monotonic() + STRAY_THREAD_GRACE
    for thread in stray:
        thread.join(max(0.0, deadline - time.monotonic()))
    left = [t.name for t in stray if t.is_alive()]
    if left:
        shown = ", ".join(left[:5]) + (f" and {len(left) - 5} more" if len(left) > 5 else "")
        print(
            f"spool: exiting without waiting for {len(left)} thread(s) a handler started "
            f"and left running ({shown}); make such threads daemon threads, or join them "
            "before the handler returns",
            file=sys.stderr,
        )
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


if __name__ == "__main__":
    console()

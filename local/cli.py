"""The `spool` command line: run workers, enqueue, inspect, and manage dead letters."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any

from pydantic import ValidationError
from tqdm import tqdm

from chalicelib import periodic
from chalicelib.errors import SpoolError
from chalicelib.models import DEFAULT_TENANT, JobQuery, JobState
from chalicelib.runtime import Runtime, build_runtime
from chalicelib.service import EnqueueRequest
from chalicelib.worker import Middleware
from local import db, serve


def _print(data: Any) -> None:
    print(json.dumps(data, indent=2, default=str))


class _Progress(Middleware):
    """Ticks a progress bar as attempts finish."""

    def __init__(self, bar: tqdm) -> None:  # type: ignore[type-arg]
        self.bar = bar

    def after_flush(self, completions: Sequence[Any], applied: Sequence[bool]) -> None:
        self.bar.update(sum(1 for ok in applied if ok))


def _sync_finish(rt: Runtime, args: argparse.Namespace) -> bool:
    """--sync-finish or SPOOL_SYNC_FINISH: write each completion before the next job,
    so a crash re-runs at most `concurrency` attempts (see chalicelib/worker.py)."""
    env = rt.settings.extra.get("SPOOL_SYNC_FINISH", "").strip().lower()
    return bool(args.sync_finish) or env in ("1", "true", "yes", "on")


def cmd_worker(rt: Runtime, args: argparse.Namespace) -> int:
    sync_finish = _sync_finish(rt, args)
    if args.burst:
        periodic.fire_due(rt.service, rt.registry, rt.store.clock, settings=rt.settings)
        due = sum(
            n
            for (_, state), n in rt.store.counts().items()
            if state in (JobState.QUEUED, JobState.RETRYING)
        )
        bar = tqdm(total=due, unit="job", disable=args.quiet or not sys.stderr.isatty())
        worker = rt.worker(args.concurrency, middleware=(_Progress(bar),))
        worker.config.sync_finish = sync_finish
        stats = worker.run(burst=True)
        worker.close()
        bar.close()
    else:
        worker = rt.worker(args.concurrency)
        worker.config.sync_finish = sync_finish

        def stop(signum: int, frame: Any) -> None:
            worker.stop()

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        if not args.quiet:
            print(
                f"spool worker: concurrency {worker.config.concurrency}, "
                f"store {rt.settings.store_url}",
                file=sys.stderr,
            )
        stop_schedules = threading.Event()
        threading.Thread(
            target=periodic.run_scheduler,
            args=(rt.service, stop_schedules, rt.registry),
            kwargs={"settings": rt.settings},
            name="spool-periodic",
            daemon=True,
        ).start()
        try:
            stats = worker.run()
        finally:
            stop_schedules.set()
    if not args.quiet:
        print(
            f"done: {stats.succeeded} succeeded, {stats.retried} retried, {stats.dead} dead, "
            f"{stats.timed_out} timed out",
            file=sys.stderr,
        )
    return 0


def cmd_enqueue(rt: Runtime, args: argparse.Namespace) -> int:
    try:
        payload = json.loads(args.payload)
    except json.JSONDecodeError as exc:
        print(f"--payload is not valid JSON: {exc}", file=sys.stderr)
        return 2
    fields: dict[str, Any] = {"type": args.type, "payload": payload}
    for name in ("queue", "priority", "delay", "idempotency_key", "max_attempts"):
        value = getattr(args, name)
        if value is not None:
            fields[name] = value
    try:
        request = EnqueueRequest.model_validate(fields)
    except ValidationError as exc:
        for error in exc.errors(include_url=False, include_input=False):
            where = ".".join(str(p) for p in error["loc"]) or "job"
            print(f"error: {where}: {error['msg']}", file=sys.stderr)
        return 2
    if args.count == 1:
        result = rt.service.enqueue([request], args.tenant)[0]
        _print({"id": result.job.id, "state": result.job.state, "created": result.created})
        return 0
    with tqdm(total=args.count, unit="job", disable=not sys.stderr.isatty()) as bar:
        for start in range(0, args.count, 500):
            n = min(500, args.count - start)
            rt.service.enqueue([request] * n, args.tenant)
            bar.update(n)
    print(f"enqueued {args.count} jobs", file=sys.stderr)
    return 0


def cmd_schedules(rt: Runtime, args: argparse.Namespace) -> int:
    """Each enabled schedule and its next tick, so an operator can see what fires when."""
    try:
        schedules = periodic.active_schedules(rt.settings)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
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
    _print(rows)
    return 0


def cmd_status(rt: Runtime, args: argparse.Namespace) -> int:
    job = rt.service.status(args.id, None)
    _print(job.model_dump(mode="json"))
    return 0


def cmd_dlq(rt: Runtime, args: argparse.Namespace) -> int:
    if args.dlq_command == "list":
        page = rt.service.list_jobs(
            JobQuery(state=JobState.DEAD, queue=args.queue, limit=args.limit)
        )
        for job in page.jobs:
            print(f"{job.id}  {job.type:<16} attempts={job.attempts}  {job.last_error or ''}")
        print(
            f"{len(page.jobs)} dead job(s)"
            + (" (more: raise --limit)" if page.next_cursor else ""),
            file=sys.stderr,
        )
        return 0
    if args.all:
        total = sum(n for (_, state), n in rt.store.counts().items() if state is JobState.DEAD)
        moved = 0
        with tqdm(total=total, unit="job", disable=not sys.stderr.isatty()) as bar:
            while True:
                batch = rt.service.redrive_all(None, queue=args.queue, limit=500)
                if not batch:
                    break
                moved += len(batch)
                bar.update(len(batch))
        print(f"redriven {moved} job(s)", file=sys.stderr)
        return 0
    if not args.id:
        print("give a job id or --all", file=sys.stderr)
        return 2
    job = rt.service.redrive(args.id, None)
    _print({"id": job.id, "state": job.state})
    return 0


def cmd_purge(rt: Runtime, args: argparse.Namespace) -> int:
    from datetime import timedelta

    cutoff = rt.store.clock.now() - timedelta(seconds=args.older_than)
    total = 0
    while True:
        n = rt.store.purge(cutoff, 1000)
        total += n
        if n < 1000:
            break
    print(f"purged {total} finished job(s)", file=sys.stderr)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="spool", description="Spool job queue")
    sub = parser.add_subparsers(dest="command", required=True)

    worker = sub.add_parser("worker", help="run jobs")
    worker.add_argument("--concurrency", type=int, default=None)
    worker.add_argument("--burst", action="store_true", help="exit when nothing is due")
    worker.add_argument("--quiet", action="store_true")
    worker.add_argument(
        "--sync-finish",
        action="store_true",
        help="write each result before taking the next job (at most CONCURRENCY "
        "attempts re-run after a crash; slower). Also SPOOL_SYNC_FINISH=1",
    )

    enqueue = sub.add_parser("enqueue", help="add a job")
    enqueue.add_argument("type")
    enqueue.add_argument("--payload", default="{}")
    enqueue.add_argument("--queue")
    enqueue.add_argument("--priority", type=int)
    enqueue.add_argument("--delay", type=float)
    enqueue.add_argument("--idempotency-key", dest="idempotency_key")
    enqueue.add_argument("--max-attempts", dest="max_attempts", type=int)
    enqueue.add_argument("--tenant", default=DEFAULT_TENANT)
    enqueue.add_argument("--count", type=int, default=1, help="add this many copies")

    status = sub.add_parser("status", help="show a job")
    status.add_argument("id")

    dlq = sub.add_parser("dlq", help="dead letters")
    dlq_sub = dlq.add_subparsers(dest="dlq_command", required=True)
    dlq_list = dlq_sub.add_parser("list")
    dlq_list.add_argument("--queue")
    dlq_list.add_argument("--limit", type=int, default=100)
    redrive = dlq_sub.add_parser("redrive")
    redrive.add_argument("id", nargs="?")
    redrive.add_argument("--all", action="store_true")
    redrive.add_argument("--queue")

    purge = sub.add_parser("purge", help="delete old finished jobs")
    purge.add_argument("--older-than", type=float, default=7 * 86400, help="seconds")

    sub.add_parser("schedules", help="periodic schedules and their next run (UTC)")

    serve.add_arguments(sub.add_parser("serve", help="serve the API (and an emulated worker)"))
    db.add_arguments(sub.add_parser("db", help="database schema: migrate, status (Postgres)"))
    return parser


COMMANDS = {
    "worker": cmd_worker,
    "enqueue": cmd_enqueue,
    "status": cmd_status,
    "dlq": cmd_dlq,
    "purge": cmd_purge,
    "serve": serve.cmd_serve,
    "schedules": cmd_schedules,
}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "db":  # before build_runtime: an unmigrated store refuses to open
        return db.cmd_db(args)
    try:
        rt = build_runtime()
    except SpoolError as exc:  # e.g. database not migrated or unreachable
        print(f"error: {exc.message}", file=sys.stderr)
        return 1
    try:
        return COMMANDS[args.command](rt, args)
    except SpoolError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 1
    finally:
        rt.close()


if __name__ == "__main__":
    started = time.monotonic()
    sys.exit(main())

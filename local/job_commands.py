"""`spool jobs`, `spool cancel` and `status --wait` on the local store, and what
every job command shares with its remote twin (local/remote_cli.py): options,
the JSON a job prints as, exit codes.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import TYPE_CHECKING, Any

from chalicelib.config import NAME_PATTERN
from chalicelib.job_state import JobState
from chalicelib.jsonstrict import is_utf8
from local import cli_ranges, tables
from local.cli_errors import NOT_UTF8, UsageError

if TYPE_CHECKING:  # the engine is loaded when a command opens the local store
    from chalicelib.models import Job
    from chalicelib.runtime import Runtime

EXIT_WAIT_TIMEOUT = 3
EXIT_JOB_FAILED = 4
LOCAL_POLL = 0.2  # seconds between reads while `status --wait` watches the local store


def check_redrive_args(args: argparse.Namespace) -> None:
    """`dlq redrive`: one id, or --all with its filters. A filter beside an id was
    ignored, and the job redriven whatever its queue."""
    if args.all and args.id:
        raise UsageError("give a job id or --all, not both")
    if args.id and (args.queue is not None or args.type is not None):
        raise UsageError(
            "--queue and --type choose among dead jobs with --all; a job id names one job",
            "Drop them, or drop the id and add --all",
        )
    if args.id and args.died_before is not None:
        raise UsageError(
            "--died-before bounds a redrive with --all; a job id names one job",
            "Drop it, or drop the id and add --all",
        )


def died_before(text: str) -> datetime:
    """`dlq redrive --all --died-before`: a time with its offset, as a run cut short
    printed its bound (the server's or the store's clock, never this machine's)."""
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        shown = text if len(text) <= 40 else text[:40] + "..."
        raise argparse.ArgumentTypeError(
            f"give an ISO 8601 time with its offset, as a redrive cut short printed it "
            f"(2030-01-31T12:00:00.000001+00:00), not {shown!r}"
        ) from None
    if when.tzinfo is None or when.utcoffset() is None:
        raise argparse.ArgumentTypeError(
            f"give the time with its offset (Z or +00:00), as a redrive cut short "
            f"printed it: {text!r} names no time zone"
        )
    return when


def enqueue_cut_short(args: argparse.Namespace, stored: int, kept: list[Any]) -> None:
    """`enqueue --count N` failed part-way: the chunks before the failure stay stored,
    and the copies carry no idempotency key, so the same command again would store
    them twice. Say how many are stored (with --json, their ids on stdout) and how
    many are left; the failure's own line follows (the caller raises it on)."""
    if args.json:
        tables.print_json(kept)
    print(
        f"spool: enqueued {stored} of {args.count} job(s) before it stopped (the last "
        f"call may have stored more: look at `spool jobs` first); the same command again "
        f"would add {args.count} more: for the rest, use --count {args.count - stored}",
        file=sys.stderr,
    )


def redrive_cut_short(args: argparse.Namespace, ids: list[str], bound: datetime | None) -> None:
    """`dlq redrive --all` failed part-way: the steps before the failure stay redriven.
    Say how many (with --json, which, on stdout) and how to go on under the same bound,
    so a job those steps redrove that has died again since is not redriven twice. The
    failure's own line follows (the caller raises it on)."""
    if args.json:
        when = None if bound is None else bound.isoformat()
        tables.print_json({"redriven": len(ids), "ids": ids, "died_before": when})
    if bound is None:  # a remote run whose first call failed: the server's bound is unknown
        print(
            "spool: the redrive failed before the server answered its first call, which "
            "may have been applied in part: look at `spool dlq list` before running it again",
            file=sys.stderr,
        )
        return
    again = ["spool dlq redrive --all"]
    for option, value in (("--queue", args.queue), ("--type", args.type)):
        if value is not None:
            again.append(f"{option} {value}")
    if getattr(args, "tenant", None) is not None:
        again.append(f"--tenant {args.tenant}")
    again.append(f"--died-before {bound.isoformat()}")
    print(
        f"spool: redriven {len(ids)} job(s) before it stopped (the last call may "
        f"have moved more); to redrive the rest and none of them twice, run: "
        f"{' '.join(again)}",
        file=sys.stderr,
    )


EXIT_CODES = f"""\
exit codes:
  0    done (status --wait: the job succeeded)
  1    failed at run time: the store or server cannot be reached, no such job,
       or not allowed in the job's state (cancel a running job, redrive a live one)
  2    usage: wrong options or settings, a job the handlers refuse, a missing or
       wrong API key
  {EXIT_WAIT_TIMEOUT}    status --wait: the time ran out before the job finished;
       db status: migrations are pending (run `spool db migrate`)
  {EXIT_JOB_FAILED}    status --wait: the job finished but did not succeed (dead or cancelled)
  130  interrupted (Ctrl-C; `spool top` too). `spool worker` and `spool serve` finish
       what is running on the first and exit 0; a second Ctrl-C stops at once (130)

remote: with --url URL (or SPOOL_URL) the job commands (enqueue, status, jobs,
cancel, dlq) talk to that server with --key KEY (or SPOOL_API_KEY) instead of
opening the local store; see docs/client.md."""


def job_json(job: Job) -> dict[str, Any]:
    """A local job as `--json` prints it: every stored field, the tenant included."""
    return job.model_dump(mode="json")


def wait_exit(state: str, finished: bool) -> int:
    """`status --wait`'s exit code for the job's state when the wait ended."""
    if not finished:
        return EXIT_WAIT_TIMEOUT
    return 0 if state == "succeeded" else EXIT_JOB_FAILED


# `status --wait` without a TIME: no limit. Not 0, which is a TIME: at most 0 s, one look
# (0 meant no limit too, so `--wait 0` waited for ever on a job that never finished).
NO_LIMIT = float("inf")


def wait_limit(wait: float) -> float | None:
    """`status --wait`'s value as a timeout: None for no limit."""
    return None if wait == NO_LIMIT else wait


# Seconds `status --wait` watches a job still waiting before it says why (once).
WAIT_NOTE_AFTER = 3.0


def wait_local(
    rt: Runtime,
    job_id: str,
    tenant: str | None,
    timeout: float | None,
    why: Callable[[Job], str | None] | None = None,
) -> Job:
    """Read the job until it is terminal or `timeout` seconds pass (None: no limit).

    A job still queued or retrying after WAIT_NOTE_AFTER seconds gets `why(job)` said
    once on stderr (no worker serves its queue): the wait was silent until it ran out,
    or for ever without a limit."""
    start = time.monotonic()
    deadline = None if timeout is None else start + timeout
    job = rt.service.status(job_id, tenant)
    told = why is None
    while not job.terminal and (deadline is None or time.monotonic() < deadline):
        left = LOCAL_POLL if deadline is None else max(0.0, deadline - time.monotonic())
        time.sleep(min(LOCAL_POLL, left))
        job = rt.service.status(job_id, tenant)
        if not told and time.monotonic() - start >= WAIT_NOTE_AFTER:
            told = True
            _say_why(job, why)
    return job


def _say_why(job: Job, why: Callable[[Job], str | None] | None) -> None:
    if why is None or job.state not in (JobState.QUEUED, JobState.RETRYING):
        return
    reason = why(job)
    if reason is not None:
        print(f"spool: note: {job.id} is still {job.state.value}: {reason}", file=sys.stderr)


def filter_name(kind: str) -> Callable[[str], str]:
    """--queue or --type as a filter, or enqueue's type and --queue: a name a job can
    have (NAME_PATTERN), as the API holds them to. An empty filter (`--type "$TYPE"`,
    TYPE unset) listed "0 job(s)" and redrove nothing on the local store, exit 0, where
    a server refuses it (exit 2); enqueue said pydantic's "String should match pattern"."""

    def name(text: str) -> str:
        if not is_utf8(text):  # argument bytes that are not UTF-8 (surrogate-escaped)
            raise argparse.ArgumentTypeError(NOT_UTF8)
        if re.fullmatch(NAME_PATTERN, text) is None:
            shown = text if len(text) <= 40 else text[:40] + "..."
            raise argparse.ArgumentTypeError(
                f"a {kind} is 1 to 64 letters, digits, '_', '.', ':' or '-', not {shown!r}"
            )
        return text

    return name


def list_options(parser: argparse.ArgumentParser, page: int = 100) -> None:
    parser.add_argument("--queue", type=filter_name("queue"), help="only jobs on this queue")
    parser.add_argument("--type", type=filter_name("type"), help="only jobs of this type")
    parser.add_argument(
        "--limit", type=_page_size, default=page, help=f"jobs per page (1-1000, default {page})"
    )
    parser.add_argument(
        "--cursor", type=_cursor, help="start after this page (the next_cursor printed last)"
    )
    parser.add_argument(
        "--all",
        action="store_true",
        help="follow every page to the end, printing each as it comes",
    )
    parser.add_argument(
        "--max-jobs",
        type=_max_jobs,
        default=tables.MAX_ALL_JOBS,
        help="with --all: stop after the page that brings it to this many jobs, print the "
        f"cursor to go on from and exit 1 (default {tables.MAX_ALL_JOBS:,})",
    )
    parser.add_argument("--json", action="store_true", help="machine output")


def _cursor(text: str) -> str:
    """Not empty, as the server holds `cursor` to: on the local store `--cursor "$NEXT"`
    with NEXT unset listed the first page again, and a script paging until no cursor
    came back read page one for ever."""
    if not text.strip():
        raise argparse.ArgumentTypeError(
            "empty: give the next_cursor the page before printed, or leave --cursor out "
            "for the first page"
        )
    return text


def _max_jobs(text: str) -> int:
    return cli_ranges.whole(text, 1, None, "must be a whole number of at least {low}, not {text!r}")


def _page_size(text: str) -> int:
    return cli_ranges.whole(
        text,
        1,
        1000,
        "must be at least {low} and at most {high}, not {value}",
        not_whole="{text!r} is not a whole number",
    )


def state_choices() -> list[str]:
    return [s.value for s in JobState]


def list_local(rt: Runtime, args: argparse.Namespace, state: JobState | None, noun: str) -> int:
    """Pages of the local store's jobs (every tenant unless --tenant), as a table or JSON."""
    from chalicelib.models import JobQuery

    def page(cursor: str | None) -> tuple[list[dict[str, Any]], str | None]:
        query = JobQuery(args.tenant, state, args.queue, args.type, limit=args.limit, cursor=cursor)
        listed = rt.service.list_jobs(query)
        return [job_json(j) for j in listed.jobs], listed.next_cursor

    if not args.all:
        tables.print_page(*page(args.cursor), args.json, noun)
        return 0

    def pages() -> Iterator[tuple[list[dict[str, Any]], str | None]]:
        cursor = args.cursor
        while True:
            jobs, cursor = page(cursor)
            yield jobs, cursor
            if cursor is None:
                return

    return 0 if tables.print_pages(pages(), args.json, noun, args.max_jobs) else 1


def cmd_jobs(rt: Runtime, args: argparse.Namespace) -> int:
    state = JobState(args.state) if args.state else None
    return list_local(rt, args, state, "job(s)")


def cmd_cancel(rt: Runtime, args: argparse.Namespace) -> int:
    job = rt.service.cancel(args.id, args.tenant)
    tables.print_job_state(job_json(job), args.json, "cancelled")
    return 0

"""`spool top`: the dashboard's overview in the terminal, redrawn every few seconds.

The same numbers as the web overview (chalicelib/ui/views.overview, one set of
cheap store reads): per queue, jobs by state, the oldest due job's age, the
workers serving it and the last hour's attempts as a sparkline. It reads the
local store directly (SQLite or Postgres from SPOOL_STORE_URL), every tenant
unless --tenant narrows it. Ctrl-C stops it.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any, TextIO

from chalicelib.config import NAME_PATTERN
from chalicelib.errors import StoreUnavailable
from chalicelib.job_state import JobState
from local import cli_ranges

if TYPE_CHECKING:
    from chalicelib.runtime import Runtime
    from chalicelib.storage.base import JobStore

SPARK = " ▁▂▃▄▅▆▇█"
SPARK_MINUTES = 30
CLEAR = "\x1b[H\x1b[2J"  # home, clear screen
# chalicelib/ui/views.py's STATES, named without loading the store (`spool --help`
# builds this command's options).
STATES = [s.value for s in JobState]
COLUMNS = ("queue", *STATES, "oldest due", "workers", "ok/h", "failed/h", "last 30 min")


INTERVAL_MIN, INTERVAL_MAX = 0.1, 3600.0


def _interval(text: str) -> float:
    """Seconds between frames: a finite number in range (inf or nan would crash the sleep)."""
    return cli_ranges.seconds(
        text,
        INTERVAL_MIN,
        INTERVAL_MAX,
        "{text!r} is not a number of seconds from {low:g} to {high:g}",
    )


def _iterations(text: str) -> int:
    return cli_ranges.whole(text, 0, None, "{text!r} is not a whole number, 0 or more")


def _tenant(text: str) -> str:
    if not re.fullmatch(NAME_PATTERN, text):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a tenant name (1-64 of A-Z a-z 0-9 _ . : -)"
        )
    return text


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--interval",
        type=_interval,
        default=2.0,
        help=f"seconds between redraws ({INTERVAL_MIN:g} to {INTERVAL_MAX:g}, default 2)",
    )
    parser.add_argument(
        "--iterations",
        "-n",
        type=_iterations,
        default=0,
        help="stop after this many frames (0: never)",
    )
    parser.add_argument("--once", action="store_true", help="print one frame and exit")
    parser.add_argument(
        "--tenant", type=_tenant, default=None, help="only this tenant's jobs (default: all)"
    )


def spark(series: list[list[int]]) -> str:
    """One character per minute: succeeded + failed attempts, scaled to the busiest minute;
    a minute with failures is drawn from the failures' share when it dominates."""
    totals = [ok + bad for ok, bad in series]
    top = max(totals, default=0)
    if top == 0:
        return " " * len(series)
    levels = len(SPARK) - 1
    return "".join(SPARK[0 if t == 0 else max(1, round(t / top * levels))] for t in totals)


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.0f}s"
    minutes = seconds / 60
    return f"{minutes:.0f}m" if minutes < 120 else f"{minutes / 60:.1f}h"


def render(data: dict[str, Any], title: str = "spool top") -> str:
    """One frame as text (no colours, no cursor moves: what a test or a pipe sees)."""
    now: datetime = data["now"]
    totals = data["totals"]
    workers = data["workers"]["live"]
    lines = [
        f"{title}   {now:%Y-%m-%d %H:%M:%S} UTC   {workers} live worker{'s' * (workers != 1)}",
        "   ".join(f"{state} {totals[state]}" for state in STATES),
        "",
    ]
    rows = [
        [
            q["queue"],
            *(str(q["states"][s]) for s in STATES),
            _age(q["oldest_due_seconds"]),
            str(q["workers"]),
            str(q["succeeded_last_hour"]),
            str(q["failed_last_hour"]),
            spark(q["throughput"][-SPARK_MINUTES:]),
        ]
        for q in data["queues"]
    ]
    if not rows:
        lines.append("no jobs yet")
        return "\n".join(lines) + "\n"
    hidden = data.get("queues_total", len(rows)) - len(rows)
    if hidden > 0:
        lines[2:2] = [f"the {len(rows)} busiest of {data['queues_total']} queues"]
    widths = [max(len(str(c)) for c in column) for column in zip(COLUMNS, *rows, strict=True)]
    for index, row in enumerate([list(COLUMNS), *rows]):
        cells = [
            cell.ljust(w) if i in (0, len(COLUMNS) - 1) else cell.rjust(w)
            for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  ".join(cells).rstrip())
        if index == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines) + "\n"


def frames(
    store: JobStore,
    tenant: str | None,
    live_seconds: float,
    interval: float,
    iterations: int,
    out: TextIO,
    clear: bool,
    sleep: Callable[[float], None] = time.sleep,
) -> int:
    """Draw a frame, wait, draw again; `iterations` frames (0: until interrupted).

    A live run outlasts a store that goes away for a while (a restart, a failover):
    the frame says so and the next one tries again. A single frame fails instead."""
    from chalicelib.ui.views import overview

    drawn = 0
    try:
        while iterations == 0 or drawn < iterations:
            if drawn:
                sleep(interval)
            try:
                text = render(overview(store, tenant, live_seconds))
            except StoreUnavailable as exc:
                if iterations == 1:
                    raise
                text = (
                    f"spool top   store unavailable: {exc.message}. "
                    f"Trying again every {interval:g}s; Ctrl-C stops.\n"
                )
            out.write((CLEAR if clear else "") + text)
            out.flush()
            drawn += 1
    except KeyboardInterrupt:
        # The frame ends on a line of its own, then Ctrl-C is what it is for every
        # command (cli_errors: `spool: interrupted.`, exit 130): it exited 0 here.
        out.write("\n")
        out.flush()
        raise
    return drawn


def cmd_top(rt: Runtime, args: argparse.Namespace) -> int:
    from chalicelib.attempt_record import live_seconds

    live = live_seconds(rt.settings)
    iterations = 1 if args.once else args.iterations
    clear = sys.stdout.isatty() and not args.once
    try:
        frames(rt.store, args.tenant, live, args.interval, iterations, sys.stdout, clear)
    except BrokenPipeError:
        # `spool top | head -3`: the reader has what it wanted, which is not an error.
        # Later writes (Python's own flush at exit) go nowhere instead of failing too.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0

"""`spool top`: the dashboard's overview in the terminal, redrawn every few seconds.

The same numbers as the web overview (chalicelib/ui/views.overview, one set of
cheap store reads): per queue, jobs by state, the oldest due job's age, the
workers serving it and the last hour's attempts as a sparkline. It reads the
local store directly (SQLite or Postgres from SPOOL_STORE_URL), every tenant
unless --tenant narrows it. Ctrl-C stops it.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any, TextIO

from chalicelib.ui.views import STATES, overview

if TYPE_CHECKING:
    from chalicelib.runtime import Runtime
    from chalicelib.storage.base import JobStore

SPARK = " ▁▂▃▄▅▆▇█"
SPARK_MINUTES = 30
CLEAR = "\x1b[H\x1b[2J"  # home, clear screen
COLUMNS = ("queue", *STATES, "oldest due", "workers", "ok/h", "failed/h", "last 30 min")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--interval", type=float, default=2.0, help="seconds between redraws")
    parser.add_argument(
        "--iterations", "-n", type=int, default=0, help="stop after this many frames (0: never)"
    )
    parser.add_argument("--once", action="store_true", help="print one frame and exit")
    parser.add_argument("--tenant", default=None, help="only this tenant's jobs (default: all)")


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
    """Draw a frame, wait, draw again; `iterations` frames (0: until interrupted)."""
    drawn = 0
    try:
        while iterations == 0 or drawn < iterations:
            if drawn:
                sleep(interval)
            text = render(overview(store, tenant, live_seconds))
            out.write((CLEAR if clear else "") + text)
            out.flush()
            drawn += 1
    except KeyboardInterrupt:
        out.write("\n")
    return drawn


def cmd_top(rt: Runtime, args: argparse.Namespace) -> int:
    from chalicelib.api.metrics import DEFAULT_LIVE_SECONDS, LIVE_SECONDS

    live = rt.settings.number(LIVE_SECONDS, DEFAULT_LIVE_SECONDS, minimum=1.0, maximum=86400.0)
    iterations = 1 if args.once else max(0, args.iterations)
    interval = max(0.1, args.interval)
    clear = sys.stdout.isatty() and not args.once
    frames(rt.store, args.tenant, live, interval, iterations, sys.stdout, clear)
    return 0

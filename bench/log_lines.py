"""What one of Spool's job lines costs, written each way it can be written.

    python -m bench.log_lines [--lines 500] [--runs 40] [--write]

Spool's text handler on /dev/null, an `enqueued` line of the usual fields. Three
ways, alternated run by run in one process so that a shared machine's slow spells
fall on all of them: through `logging` (a NullHandler on the `spool` logger makes
the handler no longer the only one, so each line takes the record and handler
chain, as any line does when a user adds a handler), the fast way a line at a time
(`spool serve` for a single enqueue), and the fast way in `logs.together()` (a batch
enqueue, a worker's flush of completions). Each figure is the fastest run, in
microseconds a line; ratios are against `logging` in the same run. --write replaces
the log-lines section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import time
from collections.abc import Callable

from bench.docs_section import markers, write_section
from chalicelib import logs
from chalicelib.config import Settings

SECTION = "log-lines"
FIELDS = {
    "job_id": "j_01HZX3Q8K9V2M7N4P6R5S1T0W8",
    "tenant": "acme",
    "type": "send_email",
    "queue": "default",
    "attempt": 0,
    "max_attempts": 5,
}


def _lines(n: int) -> Callable[[], None]:
    def write() -> None:
        for _ in range(n):
            logs.job_line(logging.INFO, "enqueued", FIELDS)

    return write


def _together(n: int) -> Callable[[], None]:
    write = _lines(n)

    def held() -> None:
        with logs.together():
            write()

    return held


def measure(lines: int, runs: int) -> dict[str, float]:
    """The fastest run of each way, in microseconds a line."""
    spool = logging.getLogger("spool")
    other = logging.NullHandler()
    ways: dict[str, tuple[Callable[[], None], bool]] = {
        "through logging": (_lines(lines), True),
        "fast, a line at a time": (_lines(lines), False),
        "fast, lines together": (_together(lines), False),
    }
    best = dict.fromkeys(ways, float("inf"))
    for _ in range(runs):
        for name, (write, slow) in ways.items():
            if slow:
                spool.addHandler(other)
            try:
                start = time.perf_counter()
                write()
                took = time.perf_counter() - start
            finally:
                spool.removeHandler(other)
            best[name] = min(best[name], took / lines * 1e6)
    return best


def section(best: dict[str, float], lines: int, runs: int, command: str) -> str:
    start, end = markers(SECTION)
    base = best["through logging"]
    rows = "\n".join(f"| {name} | {us:.1f} | {base / us:.2f}x |" for name, us in best.items())
    return f"""{start}
## One job line (bench/log_lines.py)

```sh
{command}
```

{platform.machine()}, Python {platform.python_version()}; 1-minute load average
{os.getloadavg()[0]:.2f} at the end. An `enqueued` line of the usual six fields, text
format, to /dev/null; the fastest of {runs} runs of {lines} lines each way, the ways
alternated run by run.

| way | us a line | vs logging |
|---|---:|---:|
{rows}

"through logging" is what every line cost before Spool's lines took the fast way,
and what a line still costs when a handler of the user's (or caplog) is attached.
{end}"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lines", type=int, default=500)
    parser.add_argument("--runs", type=int, default=40)
    parser.add_argument("--write", action="store_true")
    args = parser.parse_args()
    logs.configure(Settings.from_env({}), stream=open(os.devnull, "w"), force=True)  # noqa: SIM115
    best = measure(args.lines, args.runs)
    for name, us in best.items():
        print(f"{name:24} {us:7.1f} us a line")
    if args.write:
        command = (
            f".venv/bin/python -m bench.log_lines --lines {args.lines} --runs {args.runs} --write"
        )
        write_section(SECTION, section(best, args.lines, args.runs, command))
        print("wrote docs/benchmarks.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""What `spool` prints for people: aligned tables and one-line answers.

Every job-facing command prints the same JSON shape whether it ran against the
local store or a server (`--json`); without `--json` it prints these. They take
the JSON dicts (a job as the API shows it, or as the store's model dumps it),
so local and remote results look alike.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

MESSAGE_WIDTH = 60


def print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, default=str))


@contextlib.contextmanager
def reader_may_leave() -> Iterator[None]:
    """Print an answer whose command's exit code is already decided by what it found.

    main() reads a BrokenPipeError as `spool jobs | head`: the reader had what it
    wanted, exit 0. That wiped out the codes that report a finding: `spool status J
    --wait 1m | head -3` exited 0 for a dead or cancelled job (4) and for a wait that
    ran out (3), and `spool db status | head` for pending migrations (3), so a script
    with `set -o pipefail` took them for success (s58). Inside this block a reader
    gone away only ends the printing (stdout goes to /dev/null, so the exit's final
    flush cannot fail again), and the command returns its own code. The block
    flushes, so a write Python had buffered fails here, not at the exit."""
    try:
        yield
        sys.stdout.flush()
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


# Printable to Python, drawn as nothing: the Hangul fillers (letters), the braille
# blank, the combining grapheme joiner and the Khmer inherent vowels (the dashboard's
# app.js escapes the same class: Unicode's default-ignorable characters, and U+2800).
BLANK = frozenset((0x115F, 0x1160, 0x3164, 0xFFA0, 0x2800, 0x034F, 0x17B4, 0x17B5))


def _variation_selector(point: int) -> bool:
    return 0xFE00 <= point <= 0xFE0F or 0xE0100 <= point <= 0xE01EF or 0x180B <= point <= 0x180F


def _shown(c: str, before: str) -> bool:
    """Whether `c` is drawn as itself: printable and not blank, and a variation selector
    only on a character it can vary (past ASCII: an emoji, an ideograph)."""
    point = ord(c)
    if not c.isprintable() or point in BLANK:
        return False
    if _variation_selector(point):
        return before > "\x7f" and _shown(before, "")
    return True


def printable(text: str) -> str:
    """Text for a terminal: control, format and blank characters shown escaped (\x1b,
    \u202e, \u3164).

    Errors and results hold whatever a job's payload put there: printed raw, an
    escape sequence from another tenant could retitle, recolour or rewrite the
    operator's terminal, a bidi override could make one id read as another, and a
    Hangul filler made "admin\u3164" look like "admin"."""
    if text.isprintable() and text.isascii():
        return text
    return "".join(
        c if _shown(c, text[i - 1] if i else "") else c.encode("unicode_escape").decode()
        for i, c in enumerate(text)
    )


def one_line(text: str, width: int = MESSAGE_WIDTH) -> str:
    flat = printable(" ".join(text.split()))
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def table(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    """Left-aligned columns two spaces apart, trailing blanks trimmed."""
    all_rows = [tuple(headers), *(tuple(r) for r in rows)]
    widths = [max(len(row[i]) for row in all_rows) for i in range(len(headers))]
    return [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in all_rows
    ]


def _when(value: Any) -> str:
    """An ISO time as 'YYYY-MM-DD HH:MM:SS' (UTC, as stored), or '-'."""
    if not value:
        return "-"
    text = str(value).replace("T", " ")
    return text[:19]


def _outcome(job: Mapping[str, Any]) -> str:
    if job.get("last_error"):
        return one_line(str(job["last_error"]))
    if job.get("result") is not None:
        return one_line(json.dumps(job["result"], default=str))
    return ""


def job_rows(jobs: Sequence[Mapping[str, Any]]) -> list[str]:
    """A table of jobs; a tenant column when the jobs carry one (the local store)."""
    with_tenant = any("tenant" in j for j in jobs)
    return table(_job_headers(with_tenant), _job_cells(jobs, with_tenant))


def _job_headers(with_tenant: bool) -> list[str]:
    tenant = ["tenant"] if with_tenant else []
    return ["id", "type", "queue", *tenant, "state", "tries", "created (UTC)", "error / result"]


def _job_cells(jobs: Iterable[Mapping[str, Any]], with_tenant: bool) -> list[list[str]]:
    return [
        [
            printable(str(j["id"])),
            printable(str(j["type"])),
            printable(str(j["queue"])),
            *([printable(str(j.get("tenant", "-")))] if with_tenant else []),
            printable(str(j["state"])),
            f"{j['attempts']}/{j['max_attempts']}",
            _when(j.get("created_at")),
            _outcome(j),
        ]
        for j in jobs
    ]


def print_page(
    jobs: Sequence[Mapping[str, Any]],
    next_cursor: str | None,
    as_json: bool,
    noun: str = "job(s)",
) -> None:
    """A page of jobs: the table on stdout, the count and how to go on on stderr."""
    if as_json:
        print_json({"jobs": list(jobs), "next_cursor": next_cursor})
        return
    if jobs:
        print("\n".join(job_rows(jobs)))
    # The cursor ends the line: copied by a double-click or `awk '{print $NF}'`, it takes
    # no comma or bracket with it.
    more = (
        f"; more: --all, or the next page: --cursor {printable(next_cursor)}" if next_cursor else ""
    )
    print(f"{len(jobs)} {noun}{more}", file=sys.stderr)


# `--all` stops after the page that brings it to this many jobs (--max-jobs): a server
# whose cursors never repeat (stop 58 caught those that come round again) kept `spool
# jobs --all` asking for ever.
MAX_ALL_JOBS = 1_000_000


def print_pages(
    pages: Iterable[tuple[Sequence[Mapping[str, Any]], str | None]],
    as_json: bool,
    noun: str,
    max_jobs: int = MAX_ALL_JOBS,
) -> bool:
    """Every page (`--all`) as it arrives, as one table or one JSON document the same
    as print_page's for all of them; False when it stopped at `max_jobs` jobs before the
    listing ended (the line on stderr gives the cursor to go on from).

    The rows of each page are written when it comes: every job was kept and printed at
    the end, so a long listing showed nothing for minutes and held every job in memory,
    and one that never ended showed nothing at all. A column widens when a later page
    has a longer value (the header is written once, with the first page)."""
    printer = _JsonPages() if as_json else _TablePages()
    count, cursor = 0, None
    for jobs, cursor in pages:
        printer.add(jobs)
        count += len(jobs)
        if cursor is None or count >= max_jobs:
            break
    printer.end(cursor)
    if cursor is None:
        print(f"{count} {noun}", file=sys.stderr)
        return True
    more = f"stopped at --max-jobs {max_jobs}; more: --cursor {printable(cursor)}"
    print(f"{count} {noun}; {more}", file=sys.stderr)
    return False


class _TablePages:
    """print_page's table, written a page at a time."""

    def __init__(self) -> None:
        self.widths: list[int] | None = None
        self.with_tenant = False

    def add(self, jobs: Sequence[Mapping[str, Any]]) -> None:
        if self.widths is None:
            if not jobs:
                return
            self.with_tenant = any("tenant" in j for j in jobs)
            headers = _job_headers(self.with_tenant)
            self.widths = [len(h) for h in headers]
            rows = [headers, *_job_cells(jobs, self.with_tenant)]
        else:
            rows = _job_cells(jobs, self.with_tenant)
        for row in rows:
            self.widths = [max(w, len(cell)) for w, cell in zip(self.widths, row, strict=True)]
        for row in rows:
            cells = zip(row, self.widths, strict=True)
            print("  ".join(cell.ljust(width) for cell, width in cells).rstrip())
        sys.stdout.flush()

    def end(self, cursor: str | None) -> None:
        return None


class _JsonPages:
    """print_page's JSON document ({"jobs": [...], "next_cursor": ...}, as json.dumps
    with indent=2 writes it), written a page of jobs at a time."""

    def __init__(self) -> None:
        self.any = False
        sys.stdout.write('{\n  "jobs": [')

    def add(self, jobs: Sequence[Mapping[str, Any]]) -> None:
        for job in jobs:
            text = json.dumps(job, indent=2, default=str).replace("\n", "\n    ")
            sys.stdout.write(f"{',' if self.any else ''}\n    {text}")
            self.any = True
        sys.stdout.flush()

    def end(self, cursor: str | None) -> None:
        close = "\n  ]" if self.any else "]"
        sys.stdout.write(f'{close},\n  "next_cursor": {json.dumps(cursor)}\n}}\n')


def print_enqueued(answer: Mapping[str, Any], as_json: bool) -> None:
    if as_json:
        print_json(answer)
        return
    how = "created" if answer.get("created") else "existing (its idempotency key was seen before)"
    print(printable(f"{answer['id']}  {answer['state']}  {how}"))


def print_job_state(job: Mapping[str, Any], as_json: bool, verb: str) -> None:
    """The answer to cancel or redrive: the job (JSON), or `<id>  <state>  (<verb>)`,
    the verb left out where the state says it already ("cancelled  (cancelled)")."""
    if as_json:
        print_json(job)
        return
    said = "" if job["state"] == verb else f"  ({verb})"
    print(printable(f"{job['id']}  {job['state']}{said}"))

"""What SQLite adds would save by sharing one write transaction, counted in instructions.

    PYTHONPATH=. .venv/bin/python -m bench.group_add_instructions [--n 40] [--group 8]

The question behind it (issue 16 item 2, stop 41): should `spool serve` let single
enqueues that arrive together share one BEGIN IMMEDIATE ... COMMIT, each add in a
SAVEPOINT of its own ("group commit")? This counts the SQL side of that bargain on
the store's own schema and statements, under callgrind as
bench/store_add_instructions.py does (its prefilled file, warm-up, N calls between a
zero and a dump), per add:

  separate     each add its own BEGIN IMMEDIATE, INSERT, counter bump, COMMIT
  group        `--group` adds in one transaction
  group_sp     the same, each add inside SAVEPOINT ... RELEASE (so one add's failure
               could be rolled back alone)

The Python around a transaction (the write gate, the file watch, BEGIN and COMMIT
from Python, the checkpoint's look: about 73,000 instructions an add, from
store_add_instructions' parts) would be shared too; it is not counted here.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import callgrind_marks
from bench import store_add_instructions as single


def _phases(workdir: Path, n: int, group: int) -> dict[str, Callable[[], Any]]:
    from chalicelib.storage import sqlite as sqlite_store

    base = single._prefilled(workdir, 20_000)
    count = (single.WARMUP + n + 10) * group
    insert, bump = sqlite_store.INSERT, sqlite_store.BUMP

    def adds(name: str, shared: bool, savepoints: bool) -> Callable[[], Any]:
        db = single._raw(single._copy(base, f"{name}.db"))
        ids = single._job_rows(count)
        stamps = iter(range(19 * 10**14, 19 * 10**14 + count * 1000, 1000))

        def one() -> None:
            now = next(stamps)
            row = (next(ids), "default", "echo", "default", 0, '{"n":1}', 5, now, None, now)
            if savepoints:
                db.execute("SAVEPOINT one_add")
            db.execute(insert, (*row, now, None))
            db.execute(bump, ("default", "echo", "enqueued", 1))
            if savepoints:
                db.execute("RELEASE one_add")

        def run() -> None:
            if shared:
                db.execute("BEGIN IMMEDIATE")
                for _ in range(group):
                    one()
                db.execute("COMMIT")
                return
            for _ in range(group):
                db.execute("BEGIN IMMEDIATE")
                one()
                db.execute("COMMIT")

        return run

    return {
        "empty": lambda: None,
        "separate": adds("separate", shared=False, savepoints=False),
        "group": adds("group", shared=True, savepoints=False),
        "group_sp": adds("group_sp", shared=True, savepoints=True),
    }


def child(n: int, group: int) -> int:
    workdir = Path(tempfile.mkdtemp(prefix="spool-group-add-"))
    try:
        phases = _phases(workdir, n, group)
        callgrind_marks.count_phases(phases, n, single.WARMUP, freeze_heap=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=40, help="groups a phase")
    parser.add_argument("--group", type=int, default=8, help="adds a group")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args.n, args.group)
    counts = callgrind_marks.run_child(
        "bench.group_add_instructions",
        ["--n", str(args.n), "--group", str(args.group)],
        None,
        expect="separate",
    )
    empty = counts["empty"]
    adds = args.n * args.group
    print(f"instructions per add (callgrind, {args.n} groups of {args.group}, after warm-up)")
    for name in ("separate", "group", "group_sp"):
        print(f"{name:10} {(counts[name] - empty) / adds:12,.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

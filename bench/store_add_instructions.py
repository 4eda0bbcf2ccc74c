"""The SQLite store's add of one job, counted in instructions and taken apart.

    PYTHONPATH=. .venv/bin/python -m bench.store_add_instructions [--n 300] [--prefill 20000]

bench/http_instructions.py counts the store's add as one figure; this says where it
goes. It runs itself under `valgrind --tool=callgrind --instr-atstart=no` as that
bench does (bench/callgrind_marks.py): every phase is warmed up, then run N times
between a zero and a dump of callgrind's counts, and each figure is instructions per
call less an empty phase. Every store file starts as a copy of one file holding
`--prefill` jobs, so the b-trees have the depth of a store in use.

Phases:
  add                store.add([job]) of one job already built (the bench's figure)
  add.python         ... less its SQL: the same add with the two statements replaced
                     by nothing (the transaction, gate, watch, notify, the answer)
  sql                BEGIN IMMEDIATE, the add's statements, COMMIT on the store's own
                     connection with no Spool Python around them
  sql.without.X      the same on a copy of the file with X dropped (an index, a
                     trigger, the counter statement): `sql` less it is X's cost
  floor              one row into a table with no index (bench/http_floor.py's)

--annotate also prints, for the `add` phase, instructions by object file
(the interpreter, libsqlite3, libc, ...) from callgrind_annotate.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sqlite3
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from bench import callgrind_marks

WARMUP = 50

# What each `sql.without.X` phase drops from its copy of the file (names that no
# longer exist are skipped, so the bench runs before and after schema changes).
WITHOUT: dict[str, tuple[str, ...]] = {
    "every_index": (
        "DROP INDEX IF EXISTS jobs_due",
        "DROP INDEX IF EXISTS jobs_by_tenant",
        "DROP INDEX IF EXISTS jobs_by_state",
        "DROP INDEX IF EXISTS jobs_waiting_by_queue",
        "DROP INDEX IF EXISTS jobs_leases",
        "DROP INDEX IF EXISTS jobs_finished",
        "DROP INDEX IF EXISTS jobs_idempotency",
    ),
    "jobs_due": ("DROP INDEX IF EXISTS jobs_due",),
    "jobs_by_tenant": ("DROP INDEX IF EXISTS jobs_by_tenant",),
    "jobs_by_state": ("DROP INDEX IF EXISTS jobs_by_state",),
    "jobs_waiting_by_queue": ("DROP INDEX IF EXISTS jobs_waiting_by_queue",),
    "count_trigger": ("DROP TRIGGER IF EXISTS jobs_count_insert",),
    "emptied_trigger": ("DROP TRIGGER IF EXISTS job_counts_emptied",),
    "counter_triggers": (
        "DROP TRIGGER IF EXISTS counters_summed_insert",
        "DROP TRIGGER IF EXISTS counters_summed_update",
    ),
}


def _job_rows(count: int) -> Iterator[str]:
    from chalicelib.ids import new_job_id

    return iter([new_job_id() for _ in range(count)])


def _prefilled(workdir: Path, prefill: int) -> Path:
    """One store file holding `prefill` jobs in a few queues, checkpointed and closed."""
    from chalicelib.ids import new_job_id
    from chalicelib.models import NewJob
    from chalicelib.storage.sqlite import SQLiteStore

    path = workdir / "base.db"
    store = SQLiteStore(str(path))
    now = store.clock.now()
    for start in range(0, prefill, 500):
        store.add(
            [
                NewJob(
                    id=new_job_id(),
                    type="echo",
                    payload={"n": i},
                    run_at=now,
                    queue=f"q{i % 4}",
                    tenant=f"t{i % 3}",
                )
                for i in range(start, min(prefill, start + 500))
            ]
        )
    store.close()
    _vacuum(str(path))
    return path


def _vacuum(path: str) -> None:
    """Pages in order and no free list, so a file with an index dropped is compared
    with its original, not with pages handed out from the free list."""
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("VACUUM")
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()


def _raw(path: str) -> sqlite3.Connection:
    """A plain connection with the store's pragmas: opening the store itself would
    make its schema's indexes again (CREATE INDEX IF NOT EXISTS)."""
    from chalicelib.storage.sqlite import PRAGMAS

    db = sqlite3.connect(path, isolation_level=None, cached_statements=256)
    for pragma in PRAGMAS:
        db.execute(pragma)
    db.execute("PRAGMA synchronous=NORMAL")
    return db


def _copy(base: Path, name: str) -> str:
    target = base.with_name(name)
    shutil.copyfile(base, target)
    return str(target)


def _phases(workdir: Path, n: int, prefill: int) -> dict[str, Callable[[], Any]]:
    from chalicelib.ids import new_job_id
    from chalicelib.models import NewJob
    from chalicelib.storage import sqlite as sqlite_store
    from chalicelib.storage.sqlite import SQLiteStore

    base = _prefilled(workdir, prefill)
    count = WARMUP + n + 10
    store = SQLiteStore(_copy(base, "spool.db"))
    clock = store.clock
    jobs = iter(
        [
            NewJob(id=new_job_id(), type="echo", payload={"n": 1}, run_at=clock.now())
            for _ in range(count)
        ]
    )

    def add() -> Any:
        return store.add([next(jobs)])

    hollow = SQLiteStore(_copy(base, "hollow.db"))
    hollow_jobs = iter(
        [
            NewJob(id=new_job_id(), type="echo", payload={"n": 1}, run_at=clock.now())
            for _ in range(count)
        ]
    )

    class _NoSql:
        """The add's connection with its statements taken out (BEGIN/COMMIT kept)."""

        def __init__(self, db: sqlite3.Connection) -> None:
            self.db = db

        def execute(self, sql: str, params: Any = ()) -> Any:
            if sql.startswith(("BEGIN", "COMMIT", "ROLLBACK", "PRAGMA")):
                return self.db.execute(sql, params)
            return None

        def __getattr__(self, name: str) -> Any:
            return getattr(self.db, name)

    hollow._local.db = _NoSql(hollow._db())

    def add_python() -> Any:
        return hollow.add([next(hollow_jobs)])

    from chalicelib.models import AddResult, queued_job
    from chalicelib.storage.base import from_micros, to_micros

    parts = SQLiteStore(_copy(base, "parts.db"))
    parts_db = parts._db()
    one = NewJob(id=new_job_id(), type="echo", payload={"n": 1}, run_at=clock.now())

    def transaction() -> None:
        with parts._write():
            pass

    def begin_commit() -> None:
        parts_db.execute("BEGIN IMMEDIATE")
        parts_db.execute("COMMIT")

    def gate() -> None:
        assert parts._gate is not None
        parts._gate.acquire()
        parts._gate.release()

    def watch() -> None:
        assert parts._watch is not None
        parts._watch.check()

    def checkpoint_check() -> None:
        assert parts._checkpointer is not None
        parts._checkpointer.after_commit()

    def row() -> Any:
        now = to_micros(clock.now())
        return (one.id, one.tenant, sqlite_store._dumps(one.payload), to_micros(one.run_at), now)

    def answer() -> Any:
        return AddResult(queued_job(one, from_micros(0), from_micros(1)), True)

    def statements(path: str, with_bump: bool = True) -> Callable[[], Any]:
        """BEGIN, the add's own statements with its own parameters, COMMIT."""
        db = _raw(path)
        ids = _job_rows(count)
        insert, bump = sqlite_store.INSERT, sqlite_store.BUMP
        bump_row = ("default", "echo", "enqueued", 1)
        stamps = iter(range(19 * 10**14, 19 * 10**14 + count * 1000, 1000))  # a job a millisecond

        def run() -> None:
            now = next(stamps)
            row = (next(ids), "default", "echo", "default", 0, '{"n":1}', 5, now, None, now)
            db.execute("BEGIN IMMEDIATE")
            db.execute(insert, (*row, now, None))
            if with_bump:
                db.execute(bump, bump_row)
            db.execute("COMMIT")

        return run

    phases: dict[str, Callable[[], Any]] = {
        "empty": lambda: None,
        "add": add,
        "add.python": add_python,
        "part.row": row,
        "part.transaction": transaction,
        "part.begin_commit": begin_commit,
        "part.gate": gate,
        "part.watch": watch,
        "part.checkpoint_check": checkpoint_check,
        "part.notify": store.notifier.notify,
        "part.answer": answer,
        "sql": statements(_copy(base, "sql.db")),
        "sql.without.counter_bump": statements(_copy(base, "nobump.db"), with_bump=False),
    }
    for name, drops in WITHOUT.items():
        path = _copy(base, f"without_{name}.db")
        dropped = _raw(path)
        for statement in drops:
            dropped.execute(statement)
        dropped.close()
        _vacuum(path)
        phases[f"sql.without.{name}"] = statements(path)
    floor = sqlite3.connect(str(workdir / "floor.db"), isolation_level=None)
    for pragma in sqlite_store.PRAGMAS:
        floor.execute(pragma)
    floor.execute("CREATE TABLE jobs (id INTEGER PRIMARY KEY, type TEXT, payload TEXT)")

    def floor_insert() -> None:
        floor.execute("BEGIN IMMEDIATE")
        floor.execute("INSERT INTO jobs (type, payload) VALUES (?, ?)", ("echo", '{"n":1}'))
        floor.execute("COMMIT")

    phases["floor"] = floor_insert
    return phases


def child(n: int, prefill: int) -> int:
    workdir = Path(tempfile.mkdtemp(prefix="spool-add-instructions-"))
    try:
        callgrind_marks.count_phases(_phases(workdir, n, prefill), n, WARMUP)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


def measure(n: int, prefill: int, keep: Path | None) -> dict[str, float]:
    """Run the child under callgrind; instructions per add for each phase."""
    args = ["--n", str(n), "--prefill", str(prefill)]
    counts = callgrind_marks.run_child("bench.store_add_instructions", args, keep, expect="add")
    return callgrind_marks.per_request(counts, n)


def by_object(outdir: Path, label: str, n: int) -> dict[str, float]:
    """Self instructions per call of one phase, summed by object file: read from
    callgrind's file itself (ob= names the object of the cost lines that follow;
    the cost line after a calls= line is the callee's, not the caller's own)."""
    for path in sorted(outdir.glob("callgrind.out*")):
        text = path.read_text(errors="replace")
        if f"Client Request: {label}\n" in text:
            break
    else:
        return {}
    names: dict[str, str] = {}
    objects: dict[str, float] = {}
    current, skip = "?", False
    for line in text.splitlines():
        if line.startswith("cob="):
            match = re.match(r"cob=\((\d+)\) (.*)", line)
            if match:
                names[match.group(1)] = os.path.basename(match.group(2))
        elif line.startswith("ob="):
            match = re.match(r"c?ob=\((\d+)\)(?: (.*))?", line)
            if match:
                if match.group(2):
                    names[match.group(1)] = os.path.basename(match.group(2))
                current = names.get(match.group(1), "?")
        elif line.startswith("calls="):
            skip = True
        elif line[:1].isdigit() or line[:1] in "+-*":
            if skip:
                skip = False
                continue
            fields = line.split()
            if len(fields) > 1:
                objects[current] = objects.get(current, 0) + int(fields[1]) / n
    return dict(sorted(objects.items(), key=lambda kv: -kv[1]))


def table(each: dict[str, float]) -> list[tuple[str, float]]:
    sql = each["sql"]
    rows = [
        ("store.add of one job", each["add"]),
        ("  Spool's Python around the SQL (add less its statements)", each["add.python"]),
        ("  the statements (add less its Python)", each["add"] - each["add.python"]),
        ("BEGIN IMMEDIATE + the statements + COMMIT, no Spool Python", sql),
    ]
    for name, value in each.items():
        if name.startswith("sql.without."):
            rows.append((f"  of which {name.removeprefix('sql.without.')}", sql - value))
    for name, value in each.items():
        if name.startswith("part."):
            rows.append((f"  part: {name.removeprefix('part.')}", value))
    rows.append(("floor: BEGIN + one row into an unindexed table + COMMIT", each["floor"]))
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=300, help="calls per phase")
    parser.add_argument("--prefill", type=int, default=20_000, help="jobs in the file first")
    parser.add_argument("--keep", type=Path, help="keep callgrind's files in this directory")
    parser.add_argument("--annotate", action="store_true", help="the add by object file")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON too")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args.n, args.prefill)
    keep = args.keep or (
        Path(tempfile.mkdtemp(prefix="spool-callgrind-")) if args.annotate else None
    )
    each = measure(args.n, args.prefill, keep)
    print(f"instructions per call (callgrind, {args.n} calls a phase, {args.prefill:,} jobs first)")
    for row, value in table(each):
        print(f"{row:66} {value:11,.0f}")
    if args.annotate and keep is not None:
        print("\nstore.add by object file (self instructions per call):")
        for name, value in by_object(keep, "add", args.n).items():
            print(f"  {name:60} {value:11,.0f}")
    if args.json:
        print(json.dumps({name: round(value) for name, value in each.items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

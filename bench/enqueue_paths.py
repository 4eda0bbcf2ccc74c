"""Enqueue from Python, beside the floor each store sits on, in both durability modes.

    .venv/bin/python -m bench.enqueue_paths [--stores sqlite,postgres]
        [--durability normal,full] [--rounds 3] [--write]

Each round measures every row once, floors and Spool alternating, and the table shows
the median of the rounds, so a burst of other work on the machine moves a row's
floor and its Spool figure alike. Floors:
- SQLite: plain sqlite3 on the store's own schema and pragmas, the same INSERT and
  counter bump per job (one transaction per job; per batch of 100 for batches);
- Postgres: psycopg inserting one row per transaction into a table shaped like `jobs`
  (same columns and indexes, none of Spool's triggers), and for batches one
  `INSERT ... SELECT FROM unnest(...)` of 1,000 rows per transaction.
Spool is `Service.enqueue` (validation against the handler, ids, idempotency rules,
counters, wake-ups), measured with its INFO job lines off and on (to /dev/null, as
`spool` configures them). --write replaces the enqueue-paths section of
docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tqdm import tqdm

from bench.docs_section import markers, write_section
from bench.pg_schema import scratch_schema

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "benchmarks.md"
SECTION = "enqueue-paths"
SECTION_START, SECTION_END = markers(SECTION)
SIZES = {"sqlite": (5_000, 20_000, 100), "postgres": (1_000, 20_000, 1_000)}
Measure = Callable[[], float]  # returns jobs per second


@dataclass
class Row:
    store: str
    durability: str
    kind: str  # single or batch
    figures: dict[str, list[float]] = field(default_factory=dict)

    def median(self, name: str) -> float:
        return statistics.median(self.figures[name])


def _registry() -> Any:
    from chalicelib.handlers import Registry

    registry = Registry()
    registry.handler("bench.noop")(lambda payload: None)
    return registry


def _service(url: str) -> Any:
    from chalicelib.service import Service
    from chalicelib.storage import open_store

    return Service(open_store(url), _registry())


def _spool_rate(url: str, n: int, batch: int, logged: bool) -> float:
    from chalicelib.service import EnqueueRequest

    jobs_log = logging.getLogger("spool.jobs")
    jobs_log.setLevel(logging.INFO if logged else logging.WARNING)
    service = _service(url)
    validate = EnqueueRequest.model_validate
    try:
        start = time.perf_counter()
        for base in range(0, n, batch):
            requests = [
                validate({"type": "bench.noop", "payload": {"n": i}})
                for i in range(base, min(n, base + batch))
            ]
            service.enqueue(requests, "bench")
        return n / (time.perf_counter() - start)
    finally:
        service.store.close()


# -- SQLite ----------------------------------------------------------------------------


def _sqlite_floor(path: str, n: int, batch: int, durability: str) -> float:
    from bench.sqlite_bench import INSERT, now_us, raw_db, raw_row
    from chalicelib.storage.sqlite import BUMP

    db = raw_db(path)
    db.execute(f"PRAGMA synchronous={'FULL' if durability == 'full' else 'NORMAL'}")
    start = time.perf_counter()
    for base in range(0, n, batch):
        now = now_us()
        rows = [raw_row(i, now) for i in range(base, min(n, base + batch))]
        db.execute("BEGIN IMMEDIATE")
        db.executemany(INSERT, rows)
        db.execute(BUMP, ("default", "bench.noop", "enqueued", len(rows)))
        db.execute("COMMIT")
    elapsed = time.perf_counter() - start
    db.close()
    return n / elapsed


@contextmanager
def _sqlite_files() -> Iterator[Callable[[], str]]:
    directory = tempfile.mkdtemp(prefix="spool-enqueue-")
    count = iter(range(1_000_000))
    try:
        yield lambda: f"{directory}/db{next(count)}.db"
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def sqlite_measures(durability: str, kind: str, fresh: Callable[[], str]) -> dict[str, Measure]:
    single, many, size = SIZES["sqlite"]
    n, batch = (single, 1) if kind == "single" else (many, size)
    query = "?durability=full" if durability == "full" else ""

    def spool(logged: bool) -> Measure:
        return lambda: _spool_rate(f"sqlite:///{fresh()}{query}", n, batch, logged)

    def floor() -> float:
        # The floor's file is made by the store, so schema and page size match.
        path = fresh()
        from chalicelib.storage.sqlite import SQLiteStore

        SQLiteStore(path).close()
        return _sqlite_floor(path, n, batch, durability)

    return {"floor": floor, "spool": spool(False), "spool, INFO logs": spool(True)}


# -- Postgres ---------------------------------------------------------------------------

_PG_FLOOR_ONE = (
    "INSERT INTO floor_jobs (id, tenant, type, queue, priority, payload, state, max_attempts,"
    " run_at, created_at, updated_at) VALUES (%s, 'bench', 'bench.noop', 'default', 0, %s,"
    " 'queued', 3, %s, %s, %s)"
)
_PG_FLOOR_MANY = (
    "INSERT INTO floor_jobs (id, tenant, type, queue, priority, payload, state, max_attempts,"
    " run_at, created_at, updated_at) SELECT u.id, 'bench', 'bench.noop', 'default', 0,"
    " u.payload, 'queued', 3, %(now)s, %(now)s, %(now)s"
    " FROM unnest(%(ids)b::text[], %(payloads)b::text[]) AS u(id, payload)"
)


@contextmanager
def _pg_schema(durability: str) -> Iterator[str]:
    """A fresh store, beside an empty copy of its jobs table for the floor to fill."""
    from chalicelib.storage.postgres import connect, parse_url

    query = "&durability=full" if durability == "full" else ""
    with scratch_schema("bench_enqueue", query=query) as url:
        with connect(parse_url(url)) as conn:
            conn.execute("CREATE TABLE floor_jobs (LIKE jobs INCLUDING DEFAULTS INCLUDING INDEXES)")
            conn.commit()
        yield url


def _pg_floor(url: str, n: int, batch: int) -> float:
    import json

    from chalicelib.ids import new_job_id
    from chalicelib.storage.postgres import connect, parse_url

    conn = connect(parse_url(url))
    conn.autocommit = True
    # One cursor for the loop, as Spool's single enqueue keeps one per connection:
    # conn.execute makes a cursor, and looks its parameters' dumpers up, every call.
    cursor = conn.cursor()
    try:
        start = time.perf_counter()
        for base in range(0, n, batch):
            count = min(batch, n - base)
            now = datetime.now(UTC)
            if batch == 1:
                payload = json.dumps({"n": base})
                row = (new_job_id(), payload, now, now, now)
                cursor.execute(_PG_FLOOR_ONE, row, prepare=True)
                continue
            with conn.transaction():
                conn.execute(
                    _PG_FLOOR_MANY,
                    {
                        "now": now,
                        "ids": [new_job_id() for _ in range(count)],
                        "payloads": [json.dumps({"n": base + i}) for i in range(count)],
                    },
                )
        return n / (time.perf_counter() - start)
    finally:
        conn.close()


def _pg_statement(url: str, n: int, batch: int) -> float:
    """Spool's own enqueue statement (the row, its enqueued_log row, the dashboard
    counts, the wake-up) sent by the floor's loop: what Spool's SQL costs the server
    with none of Spool's Python around it."""
    import json
    import random

    from chalicelib.ids import new_job_id
    from chalicelib.storage.postgres import ADD_KEYLESS_ONE_SQL, add_sql, connect, parse_url

    one_value = {"tenant", "type", "queue", "priority", "max_attempt", "key", "callback_url"}
    batch_sql = add_sql(frozenset(one_value), keyless=True)

    settings = parse_url(url)
    conn = connect(settings)
    cursor = conn.cursor()  # kept, as the floor's and Spool's single enqueue keep one
    try:
        start = time.perf_counter()
        for base in range(0, n, batch):
            count = min(batch, n - base)
            now = datetime.now(UTC)
            ids = [new_job_id() for _ in range(count)]
            payloads = [json.dumps({"n": base + i}) for i in range(count)]
            shared = {"now": now, "shard": random.randrange(16), "channel": settings.channel}
            if batch == 1:
                one = {
                    "id": ids[0], "tenant": "bench", "type": "bench.noop", "queue": "default",
                    "priority": 0, "payload": payloads[0], "max_attempt": 3, "run_at": now,
                    "key": None, "callback_url": None,
                }  # fmt: skip
                cursor.execute(ADD_KEYLESS_ONE_SQL, {**shared, **one}, prepare=True).fetchall()
                continue
            # As the store sends a batch without keys (PostgresStore._add_keyless): the
            # columns one value for every job once, the ids, payloads and times (each
            # job's own, from Service.build) as arrays, no ids read back.
            many = {
                "ids": ids, "tenant": "bench", "type": "bench.noop", "queue": "default",
                "priority": 0, "payloads": payloads, "max_attempt": 3,
                "run_ats": [now] * count, "key": None, "callback_url": None,
            }  # fmt: skip
            conn.execute(batch_sql, {**shared, **many}).fetchall()
        return n / (time.perf_counter() - start)
    finally:
        conn.close()


def pg_measures(durability: str, kind: str, url: str) -> dict[str, Measure]:
    single, many, size = SIZES["postgres"]
    n, batch = (single, 1) if kind == "single" else (many, size)
    return {
        "floor": lambda: _pg_floor(url, n, batch),
        "statement": lambda: _pg_statement(url, n, batch),
        "spool": lambda: _spool_rate(url, n, batch, False),
        "spool, INFO logs": lambda: _spool_rate(url, n, batch, True),
    }


# -- the run ------------------------------------------------------------------------------


def run(stores: list[str], modes: list[str], rounds: int) -> list[Row]:
    from chalicelib import logs
    from chalicelib.config import Settings

    sink = open(os.devnull, "w")  # noqa: SIM115 - lives for the whole run
    logs.configure(Settings.from_env({}), stream=sink)
    rows = [Row(s, d, k) for s in stores for d in modes for k in ("single", "batch")]
    with tqdm(total=rounds * len(rows), desc="enqueue paths", unit="row") as bar:
        for _ in range(rounds):
            for row in rows:
                bar.set_postfix_str(f"{row.store}/{row.durability}/{row.kind}")
                if row.store == "sqlite":
                    with _sqlite_files() as fresh:
                        measures = sqlite_measures(row.durability, row.kind, fresh)
                        for name, measure in measures.items():
                            row.figures.setdefault(name, []).append(measure())
                else:
                    with _pg_schema(row.durability) as url:
                        for name, measure in pg_measures(row.durability, row.kind, url).items():
                            row.figures.setdefault(name, []).append(measure())
                bar.update(1)
    return rows


def table(rows: list[Row]) -> str:
    lines = [
        "| store | durability | enqueue | floor | Spool's SQL alone | % of floor | Spool "
        "| % of floor | Spool, INFO logs | % of floor |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        floor, spool, logged = r.median("floor"), r.median("spool"), r.median("spool, INFO logs")
        sql = "| - | - "
        if "statement" in r.figures:
            statement = r.median("statement")
            sql = f"| {statement:,.0f}/s | {100 * statement / floor:.0f}% "
        lines.append(
            f"| {r.store} | {r.durability} | {r.kind} | {floor:,.0f}/s {sql}| {spool:,.0f}/s "
            f"| {100 * spool / floor:.0f}% | {logged:,.0f}/s | {100 * logged / floor:.0f}% |"
        )
    return "\n".join(lines)


def render(rows: list[Row], command: str, rounds: int, load: tuple[float, ...]) -> str:
    sqlite_single, sqlite_many, sqlite_size = SIZES["sqlite"]
    pg_single, pg_many, pg_size = SIZES["postgres"]
    return f"""{SECTION_START}
## Enqueue from Python, beside each store's floor

```sh
{command}
```

{os.cpu_count()} cores, Python {platform.python_version()}, SQLite {sqlite3.sqlite_version};
1-minute load average {load[0]:.2f} before the run and {os.getloadavg()[0]:.2f} after it. Medians of
{rounds} rounds; in each round floors and Spool alternate. SQLite: {sqlite_single:,} single
enqueues, {sqlite_many:,} in batches of {sqlite_size}; its floor is plain sqlite3 doing the
same INSERT and counter bump on the store's schema and pragmas. Postgres: {pg_single:,}
single, {pg_many:,} in batches of {pg_size:,}; its floor is psycopg inserting into a table
with the columns and indexes of `jobs` (one row per transaction, or one
`INSERT ... SELECT FROM unnest` per batch); "Spool's SQL alone" is the store's own
enqueue statement (the row, its `enqueued_log` row, the dashboard counts,
the wake-up) sent by that same loop, so it is what the server's share of Spool costs with
none of Spool's Python. Spool is `Service.enqueue`: validation
against the handler's payload model, ids, idempotency rules, counters and wake-ups
included; "INFO logs" adds the one `enqueued` line per job that `spool` and
`spool serve` write (here to /dev/null). Durability `full` is `?durability=full` on
the store URL (docs/self-hosting.md says what each mode survives).

{table(rows)}
{SECTION_END}"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.enqueue_paths")
    parser.add_argument("--stores", default="sqlite,postgres")
    parser.add_argument("--durability", default="normal,full")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--write", action="store_true")
    args = parser.parse_args(argv)
    load = os.getloadavg()
    stores = [s for s in args.stores.split(",") if s]
    modes = [m for m in args.durability.split(",") if m]
    rows = run(stores, modes, args.rounds)
    print(table(rows))
    given = argv if argv is not None else sys.argv[1:]
    command = " ".join([".venv/bin/python -m bench.enqueue_paths", *given])
    if args.write:
        write_section(SECTION, render(rows, command, args.rounds, load))
        print(f"wrote {DOC.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

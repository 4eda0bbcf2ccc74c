"""The dashboard's server time with a million jobs, on SQLite and Postgres (run by hand).

    .venv/bin/python -m bench.ui_bench                 # both stores, prints a table
    .venv/bin/python -m bench.ui_bench --write         # also fills docs/benchmarks.md
    .venv/bin/python -m bench.ui_bench --jobs 200000 --stores sqlite   # quicker

What is measured: the time `chalicelib.api.routes.handle` takes to answer each
dashboard JSON route (authentication, the store reads, the views, redaction,
JSON encoding), in process, with no HTTP in front, so it is the server's own
time. Each route runs ROUNDS times after one warm-up call; the table gives the
median and the 95th percentile.

The data: N jobs (default 1,000,000) over 4 tenants and 5 queues, written by
one INSERT ... SELECT straight into the store's table, so the store's triggers
keep the per-tenant counts exactly as live traffic would: 90% succeeded, 5%
dead, 3% queued, 1% retrying, 1% cancelled; every job has an idempotency key;
one tenant holds a quarter of them. The last hour's per-minute tallies are
written as rows (60 minutes x tenants x queues), as finishes would write them.

The baseline, from the same run on the same data: the reads the overview would
make without the dashboard's counts (`counts()`, a GROUP BY over every job,
and `oldest_due()` over every waiting job). The ratio says what the counts and
indexes buy.
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "benchmarks.md"
START, END = "<!-- section:ui -->", "<!-- /section:ui -->"
PG_URL = os.environ.get("SPOOL_BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
SCHEMA = "bench_ui"
KEY, TENANT = "bench-key-0123456789", "tenant-0"
ROUNDS = 30
TENANTS, QUEUES = 4, 5
BASE_MICROS = 1_700_000_000_000_000

# State by i % 100: the mix of a busy queue that keeps its history.
STATE_SQL = (
    "CASE WHEN {m} < 90 THEN 'succeeded' WHEN {m} < 95 THEN 'dead' WHEN {m} < 98 THEN 'queued' "
    "WHEN {m} < 99 THEN 'retrying' ELSE 'cancelled' END"
)


def fill_sqlite(path: str, jobs: int) -> None:
    from chalicelib.storage.sqlite import SQLiteStore

    SQLiteStore(path).close()  # the schema, triggers and indexes
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=OFF")
    db.execute("BEGIN")
    db.execute(
        "WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < ?) "
        "INSERT INTO jobs (id, tenant, type, queue, priority, payload, state, attempts, "
        "max_attempts, run_at, last_error, idempotency_key, created_at, updated_at, finished_at) "
        "SELECT printf('j_%032x', i), 'tenant-' || (i % ?), 'echo', 'q' || (i % ?), 0, "
        '\'{"n":1,"headers":{"Authorization":"Bearer x"}}\', '
        + STATE_SQL.format(m="(i % 100)")
        + ", 1, 3, ? + i * 1000, CASE WHEN i % 100 BETWEEN 90 AND 94 THEN 'boom' END, "
        "'key-' || i, ? + i * 1000, ? + i * 1000, "
        "CASE WHEN i % 100 < 95 OR i % 100 = 99 THEN ? + i * 1000 END FROM n",
        (jobs - 1, TENANTS, QUEUES, *([BASE_MICROS] * 4)),
    )
    now = int(time.time() * 1e6) // 60_000_000 * 60_000_000
    db.executemany(
        "INSERT INTO job_minutes (minute, tenant, queue, succeeded, failed) VALUES (?, ?, ?, ?, ?)",
        [
            (now - m * 60_000_000, f"tenant-{t}", f"q{q}", 100 + m, m % 7)
            for m in range(60)
            for t in range(TENANTS)
            for q in range(QUEUES)
        ],
    )
    db.execute("COMMIT")
    db.execute("ANALYZE")
    db.close()


def fill_postgres(url: str, jobs: int) -> None:
    from chalicelib.storage import migrations
    from chalicelib.storage import postgres as pg

    settings = pg.parse_url(f"{url}?schema={SCHEMA}")  # search_path: the bench's schema only
    with pg.connect(settings) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")
        migrations.migrate(conn, SCHEMA)
        conn.execute(
            f"INSERT INTO {SCHEMA}.jobs (id, tenant, type, queue, priority, payload, state,"
            " attempts, max_attempts, run_at, last_error, idempotency_key, created_at, updated_at,"
            " finished_at)"
            " SELECT 'j_' || lpad(to_hex(i), 32, '0'), 'tenant-' || (i %% %(t)s), 'echo',"
            ' \'q\' || (i %% %(q)s), 0, \'{"n":1,"headers":{"Authorization":"Bearer x"}}\', '
            + STATE_SQL.format(m="(i %% 100)")
            + ", 1, 3, to_timestamp(%(base)s + i / 1000.0),"
            " CASE WHEN i %% 100 BETWEEN 90 AND 94 THEN 'boom' END, 'key-' || i,"
            " to_timestamp(%(base)s + i / 1000.0), to_timestamp(%(base)s + i / 1000.0),"
            " CASE WHEN i %% 100 < 95 OR i %% 100 = 99 THEN to_timestamp(%(base)s + i / 1000.0) END"
            " FROM generate_series(0, %(n)s - 1) AS i",
            {"t": TENANTS, "q": QUEUES, "base": BASE_MICROS // 1_000_000, "n": jobs},
        )
        conn.execute(
            f"INSERT INTO {SCHEMA}.job_minutes (minute, tenant, queue, shard, succeeded, failed)"
            " SELECT date_trunc('minute', now()) - m * interval '1 minute', 'tenant-' || t,"
            " 'q' || q, 0, 100 + m, m %% 7"
            " FROM generate_series(0, 59) m, generate_series(0, %s) t, generate_series(0, %s) q",
            (TENANTS - 1, QUEUES - 1),
        )
    with pg.connect(settings) as conn:  # VACUUM cannot run in a transaction
        conn.autocommit = True
        conn.execute(f"VACUUM ANALYZE {SCHEMA}.jobs")


def drop_postgres(url: str) -> None:
    from chalicelib.storage import postgres as pg

    with pg.connect(pg.parse_url(url)) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")


@contextmanager
def runtime_on(url: str) -> Iterator[Any]:
    from chalicelib import runtime as runtime_module
    from chalicelib.config import Settings
    from chalicelib.runtime import build_runtime

    settings = Settings(store_url=url, api_keys=f"{KEY}={TENANT}")
    rt = build_runtime(settings)
    logging.getLogger("spool").setLevel(logging.WARNING)  # no line per request
    runtime_module.reset(rt)
    try:
        yield rt
    finally:
        runtime_module.reset(None)
        rt.close()


def timed(call: Callable[[], Any], rounds: int) -> tuple[float, float]:
    call()  # warm: connections, caches, the first plan
    samples = []
    for _ in range(rounds):
        started = time.perf_counter()
        call()
        samples.append((time.perf_counter() - started) * 1000)
    samples.sort()
    return statistics.median(samples), samples[min(len(samples) - 1, int(len(samples) * 0.95))]


def measure(url: str, rounds: int) -> list[tuple[str, float, float]]:
    from chalicelib.api.http import ApiRequest
    from chalicelib.api.routes import handle

    def route(op: str, query: dict[str, str] | None = None, **params: str) -> Callable[[], Any]:
        request = ApiRequest(headers={"x-api-key": KEY}, query=query or {})

        def call() -> Any:
            response = handle(op, request, **params)
            assert response.status == 200, (op, response.status, response.body[:300])
            return response

        return call

    with runtime_on(url) as rt:
        import json

        first = json.loads(route("ui_jobs", {"state": "queued"})().body)
        cursor = first["next_cursor"]
        some_id = first["jobs"][0]["id"]
        rows: list[tuple[str, float, float]] = []
        pages: list[tuple[str, Callable[[], Any]]] = [
            ("overview", route("ui_overview")),
            ("jobs, newest first", route("ui_jobs")),
            ("jobs, state=queued", route("ui_jobs", {"state": "queued"})),
            ("jobs, state=queued, page 2", route("ui_jobs", {"state": "queued", "cursor": cursor})),
            ("jobs, state=dead (dead letters)", route("ui_jobs", {"state": "dead"})),
            ("jobs, state=dead, queue=q1", route("ui_jobs", {"state": "dead", "queue": "q1"})),
            ("jobs, find by idempotency key", route("ui_jobs", {"find": "key-400000"})),
            ("jobs, find by id", route("ui_jobs", {"find": some_id})),
            ("one job with attempts", route("ui_job", job_id=some_id)),
        ]
        for name, call in pages:
            rows.append((name, *timed(call, rounds)))
        store = rt.store
        rows.append(
            (
                "baseline: counts() + oldest_due()",
                *timed(lambda: (store.counts(), store.oldest_due()), max(3, rounds // 10)),
            )
        )
        rows.append(
            (
                "new: state_counts() + oldest_due(tenant)",
                *timed(
                    lambda: (store.state_counts(TENANT), store.oldest_due(tenant=TENANT)), rounds
                ),
            )
        )
    return rows


# What the dashboard adds to every write: its triggers and its two indexes.
SQLITE_EXTRAS = (
    "DROP TRIGGER jobs_count_insert",
    "DROP TRIGGER jobs_count_moved",
    "DROP TRIGGER jobs_count_removed",
    "DROP TRIGGER jobs_minute",
    "DROP INDEX jobs_by_state",
    "DROP INDEX jobs_waiting_by_queue",
)
PG_EXTRAS = (
    "DROP TRIGGER jobs_counted_insert ON jobs",
    "DROP TRIGGER jobs_counted_delete ON jobs",
    "DROP TRIGGER jobs_counted_update ON jobs",
    "DROP INDEX jobs_by_state",
    "DROP INDEX jobs_waiting_by_queue",
)


def churn(store: Any, jobs: int, clock: Callable[[], float] = time.perf_counter) -> float:
    """Seconds to add `jobs` in batches of 500, then claim and finish them 100 at a time."""
    from chalicelib.ids import new_job_id
    from chalicelib.models import Completion, JobState, NewJob

    now = store.clock.now()
    new = [
        NewJob(id=new_job_id(), type="echo", payload={"n": i}, run_at=now, tenant=f"t{i % 4}",
               queue=f"q{i % 5}", priority=0, max_attempts=3)
        for i in range(jobs)
    ]  # fmt: skip
    started = clock()
    for at in range(0, jobs, 500):
        store.add(new[at : at + 500])
    while claimed := store.claim(100, 60):
        store.finish([Completion(j.id, j.lease_token, JobState.SUCCEEDED) for j in claimed])
    return clock() - started


def overhead(kind: str, folder: str, jobs: int, rounds: int = 5) -> tuple[float, float]:
    """Jobs per second through add + claim + finish without and with the dashboard's
    triggers and indexes, alternating, best of `rounds` each (same run, same machine).

    SQLite does all its work in this process, so it is timed in this process's CPU
    seconds, which other work on a shared machine does not inflate; Postgres works
    in its server, so it is timed by the wall clock."""
    timer = time.process_time if kind == "sqlite" else time.perf_counter
    from chalicelib.storage import open_store

    best = {False: 0.0, True: 0.0}
    for round_ in range(rounds):
        for kept in (False, True):
            if kind == "sqlite":
                url = f"sqlite:///{folder}/churn-{round_}-{kept}.db"
                store = open_store(url)
                if not kept:
                    for statement in SQLITE_EXTRAS:
                        store._db().execute(statement)  # type: ignore[attr-defined]
            else:
                fill_postgres(PG_URL, 0)
                if not kept:
                    from chalicelib.storage import postgres as pg

                    with pg.connect(pg.parse_url(f"{PG_URL}?schema={SCHEMA}")) as conn:
                        for statement in PG_EXTRAS:
                            conn.execute(statement)
                store = open_store(f"{PG_URL}?schema={SCHEMA}")
            try:
                best[kept] = max(best[kept], jobs / churn(store, jobs, timer))
            finally:
                store.close()
    if kind != "sqlite":
        drop_postgres(PG_URL)
    return best[False], best[True]


def table(results: dict[str, list[tuple[str, float, float]]]) -> str:
    stores = list(results)
    head = "| route | " + " | ".join(f"{s} median | {s} p95" for s in stores) + " |"
    rule = "| --- |" + " ---: | ---: |" * len(stores)
    lines = [head, rule]
    for i, (name, _, _) in enumerate(results[stores[0]]):
        cells = " | ".join(f"{results[s][i][1]:.2f} ms | {results[s][i][2]:.2f} ms" for s in stores)
        lines.append(f"| {name} | {cells} |")
    ratios = []
    for s in stores:
        base = next(r for r in results[s] if r[0].startswith("baseline"))[1]
        new = next(r for r in results[s] if r[0].startswith("new:"))[1]
        ratios.append(f"{s}: {base / max(new, 1e-6):,.0f}x")
    return (
        "\n".join(lines)
        + "\n\nBaseline over new (the overview's counts): "
        + ", ".join(ratios)
        + "\n"
    )


def describe() -> str:
    return (
        f"{os.cpu_count()} cores shared with other work, Python {platform.python_version()}, "
        f"SQLite {sqlite3.sqlite_version}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ui_bench")
    parser.add_argument("--jobs", type=int, default=1_000_000)
    parser.add_argument("--stores", default="sqlite,postgres")
    parser.add_argument("--rounds", type=int, default=ROUNDS)
    parser.add_argument("--write", action="store_true", help="fill docs/benchmarks.md")
    parser.add_argument(
        "--churn", type=int, default=20_000, help="jobs for the write-cost rows (0: skip)"
    )
    args = parser.parse_args(argv)
    results: dict[str, list[tuple[str, float, float]]] = {}
    fills: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as folder:
        for store in args.stores.split(","):
            started = time.perf_counter()
            if store == "sqlite":
                path = f"{folder}/ui.db"
                fill_sqlite(path, args.jobs)
                url = f"sqlite:///{path}"
            else:
                fill_postgres(PG_URL, args.jobs)
                url = f"{PG_URL}?schema={SCHEMA}"
            fills[store] = time.perf_counter() - started
            print(f"{store}: {args.jobs:,} jobs written in {fills[store]:.0f} s", flush=True)
            try:
                results[store] = measure(url, args.rounds)
            finally:
                if store != "sqlite":
                    drop_postgres(PG_URL)
    text = table(results)
    if args.churn:
        lines = [
            "",
            f"Write cost (add {args.churn:,} jobs in batches of 500, then claim and finish "
            "100 at a time; jobs per second, best of 5, alternating; SQLite in CPU seconds "
            "of the process, Postgres by the wall clock):",
            "",
            "| store | without the dashboard's triggers and indexes | with | ratio |",
            "| --- | ---: | ---: | ---: |",
        ]
        with tempfile.TemporaryDirectory() as folder:
            for store in args.stores.split(","):
                without, with_ = overhead(store, folder, args.churn)
                lines.append(f"| {store} | {without:,.0f} | {with_:,.0f} | {with_ / without:.2f} |")
        text += "\n".join(lines) + "\n"
    print(text)
    if args.write:
        section = (
            f"{START}\n## Dashboard server time (bench/ui_bench.py)\n\n```sh\n"
            f".venv/bin/python -m bench.ui_bench --jobs {args.jobs} --churn {args.churn} "
            "--write\n```\n\n"
            f"{args.jobs:,} jobs over {TENANTS} tenants and {QUEUES} queues (90% succeeded, "
            "5% dead, 3% queued, 1% retrying, 1% cancelled), each route answered in process by "
            "`chalicelib.api.routes.handle` (key check, store reads, views, masking, JSON), "
            f"{args.rounds} rounds after a warm-up; {describe()}, Postgres on the same machine. "
            "The signed-in tenant holds a quarter of the jobs. Goal: every page at or under "
            "200 ms.\n\n" + text + "\nHow each read avoids a scan is in docs/dashboard.md.\n" + END
        )
        doc = DOC.read_text()
        if START in doc:
            doc = doc[: doc.index(START)] + section + doc[doc.index(END) + len(END) :]
        else:
            doc = doc.rstrip("\n") + "\n\n" + section + "\n"
        DOC.write_text(doc)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

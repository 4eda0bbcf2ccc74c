"""What the finished-row epoch bump costs a worker's statements (stop 54), by hand.

    .venv/bin/python -m bench.update_trigger_cost [--rounds 300] [--stores postgres,sqlite]

Postgres (SPOOL_BENCH_PG_URL): two fresh schemas, one at migration 0013 and one at
0014, the same jobs in each; a worker's claim, start mark and finish statements of 1
and 20 rows sent to each in turn, and the execution time EXPLAIN ANALYZE gives (the
statement and all its triggers; `--trigger`: the update trigger's own), median per
statement. SQLite: two files made by this
Spool, one with `jobs_finished_changed_epoch` dropped; the same statements in
autocommit, wall time per statement, median. `--same` builds both sides alike (0013
twice, or the trigger dropped in both): the noise floor of a run.

The machine is shared: compare the two columns of one run, not runs.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Callable
from typing import Any

SIZES = (1, 20)
PG_STATEMENTS = {
    "claim": "UPDATE jobs SET state = 'running', attempts = attempts + 1, lease_token = 't',"
    " lease_expires_at = now() + interval '30 s', started_at = now(), updated_at = now(),"
    " unstarted = true WHERE id = ANY(%s) AND state = 'queued'",
    "start": "UPDATE jobs SET unstarted = NULL WHERE id = ANY(%s) AND state = 'running'",
    "finish": "UPDATE jobs SET state = 'succeeded', result = '1', lease_token = NULL,"
    " lease_expires_at = NULL, finished_at = now(), updated_at = now()"
    " WHERE id = ANY(%s) AND state = 'running'",
}
SQLITE_STATEMENTS = {
    "claim": "UPDATE jobs SET state = 'running', attempts = attempts + 1, lease_token = 'x',"
    " lease_expires_at = 9, started_at = 1, updated_at = 1, unstarted = 1 WHERE id IN ({m})",
    "start": "UPDATE jobs SET unstarted = NULL WHERE id IN ({m}) AND state = 'running'",
    "finish": "UPDATE jobs SET state = 'succeeded', result = '1', lease_token = NULL,"
    " lease_expires_at = NULL, finished_at = 2, updated_at = 2"
    " WHERE id IN ({m}) AND state = 'running'",
}
Timings = dict[tuple[str, str, int], list[float]]


def _explained_us(conn: Any, statement: str, ids: list[str], trigger: bool) -> float:
    """EXPLAIN ANALYZE's execution time (the statement and its triggers, without the
    parse, plan and round trip), or with `trigger` the update trigger's own time."""
    plan = conn.execute("EXPLAIN (ANALYZE, FORMAT JSON) " + statement, (ids,)).fetchone()[0]
    plan = json.loads(plan) if isinstance(plan, str) else plan
    if not trigger:
        return float(plan[0]["Execution Time"]) * 1000
    for fired in plan[0].get("Triggers", []):
        if fired["Trigger Name"] == "jobs_counted_update":
            return float(fired["Time"]) * 1000
    raise AssertionError(f"no update trigger in the plan: {plan}")


def _alternate(
    rounds: int, sides: dict[str, Any], run: Callable[[Any, str, list[str]], float], names: Any
) -> Timings:
    """Each round: every statement and size on each side in turn (order flipped each
    round), on fresh rows of that side."""
    times: Timings = {(side, name, size): [] for side in sides for name in names for size in SIZES}
    nxt = 0
    for r in range(rounds):
        order = list(sides) if r % 2 == 0 else list(reversed(sides))
        for size in SIZES:
            ids = [f"j{i:08d}" for i in range(nxt, nxt + size)]
            nxt += size
            for side in order:
                for name in names:
                    times[(side, name, size)].append(run(sides[side], name, ids))
    return times


def _print(store: str, unit: str, times: Timings, names: Any) -> None:
    sides = sorted({side for side, _, _ in times})
    before, after = sides[0], sides[1]
    print(f"\n{store}: median {unit}, {before} against {after}")
    print(f"| statement | rows | {before} | {after} | {after}/{before} |")
    print("|---|---:|---:|---:|---:|")
    for name in names:
        for size in SIZES:
            a = statistics.median(times[(before, name, size)])
            b = statistics.median(times[(after, name, size)])
            print(f"| {name} | {size} | {a:.1f} | {b:.1f} | {b / a:.2f} |")


def postgres(rounds: int, same: bool, trigger: bool) -> None:
    from chalicelib.storage.postgres import connect, parse_url
    from tests.pg_support import fresh_schema, schema_at

    base = os.environ["SPOOL_BENCH_PG_URL"]
    with fresh_schema(False, base=base) as u13, fresh_schema(False, base=base) as u14:
        sides: dict[str, Any] = {}
        for side, url, version in (("0013", u13, 13), ("0014", u14, 13 if same else 14)):
            settings = parse_url(url)
            conn = connect(settings)
            schema_at(conn, settings.schema, version)
            conn.execute(
                "INSERT INTO jobs (id, tenant, type, queue, priority, payload, state, attempts,"
                " max_attempts, run_at, created_at, updated_at) SELECT 'j' || lpad(g::text, 8,"
                " '0'), 't' || (g %% 4), 'echo', 'default', 0, '{}', 'queued', 0, 5, now(),"
                " now(), now() FROM generate_series(0, %s) g",
                (rounds * sum(SIZES) + 10,),
            )
            conn.execute("ANALYZE jobs")
            sides[side] = conn
        try:
            times = _alternate(
                rounds,
                sides,
                lambda conn, name, ids: _explained_us(conn, PG_STATEMENTS[name], ids, trigger),
                PG_STATEMENTS,
            )
        finally:
            for conn in sides.values():
                conn.close()
    what = "the update trigger's time" if trigger else "execution time"
    _print(f"Postgres, {what} (EXPLAIN ANALYZE)", "us", times, PG_STATEMENTS)


def sqlite(rounds: int, same: bool) -> None:
    from chalicelib.storage.sqlite import SQLiteStore

    folder = tempfile.mkdtemp(prefix="spool_trigger_cost_")
    sides: dict[str, sqlite3.Connection] = {}
    for side in ("without", "with"):
        path = os.path.join(folder, f"{side}.db")
        SQLiteStore(path).close()
        conn = sqlite3.connect(path, isolation_level=None)
        if side == "without" or same:
            conn.execute("DROP TRIGGER jobs_finished_changed_epoch")
        conn.execute("BEGIN")
        conn.executemany(
            "INSERT INTO jobs (id, tenant, type, queue, priority, payload, state, attempts,"
            " max_attempts, run_at, created_at, updated_at)"
            " VALUES (?, 't', 'echo', 'default', 0, '{}', 'queued', 0, 5, 0, 0, 0)",
            [(f"j{i:08d}",) for i in range(rounds * sum(SIZES) + 10)],
        )
        conn.execute("COMMIT")
        sides[side] = conn

    def run(conn: sqlite3.Connection, name: str, ids: list[str]) -> float:
        statement = SQLITE_STATEMENTS[name].format(m=",".join("?" * len(ids)))
        started = time.perf_counter()
        conn.execute(statement, ids)
        return (time.perf_counter() - started) * 1e6

    try:
        times = _alternate(rounds, sides, run, SQLITE_STATEMENTS)
    finally:
        for conn in sides.values():
            conn.close()
    # "with" sorts after "without" alphabetically: name them so the ratio reads after/before.
    renamed: Timings = {
        ("a: without", n, s) if side == "without" else ("b: with", n, s): v
        for (side, n, s), v in times.items()
    }
    _print("SQLite, a statement alone in autocommit", "us", renamed, SQLITE_STATEMENTS)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=300)
    parser.add_argument("--stores", default="postgres,sqlite")
    parser.add_argument("--same", action="store_true", help="both sides alike: the noise")
    parser.add_argument(
        "--trigger", action="store_true", help="Postgres: jobs_counted_update's time only"
    )
    args = parser.parse_args()
    print(f"load average {os.getloadavg()[0]:.1f} at the start")
    if "postgres" in args.stores:
        postgres(args.rounds, args.same, args.trigger)
    if "sqlite" in args.stores:
        sqlite(args.rounds, args.same)
    print(f"\nload average {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()

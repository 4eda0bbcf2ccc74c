"""What Spool's single-enqueue statement costs the server, beside the floor's insert.

    SPOOL_BENCH_PG_URL=postgresql://.../<db> .venv/bin/python -m bench.pg_enqueue_sql \\
        [--rounds 15] [--n 400]

The enqueue-paths bench (bench/enqueue_paths.py) times whole enqueues, each ending
in a commit that waits for the WAL flush; on a shared machine that wait moves by
milliseconds between runs and hides a change of tens of microseconds in the
statement. Here both statements run with synchronous_commit off (the flush is the
same for both, and left out), prepared, on one connection each, in alternating
rounds of `n`: the floor's plain insert into a copy of `jobs` (its columns and
indexes, none of its triggers) and the checkout's own single-enqueue statement (the row, the
enqueued count, the dashboard counts, the wake-up). It prints microseconds per
statement, the best round and the median, and the difference: Spool's SQL over the
floor. Run it from each of two checkouts (PYTHONPATH=. in each) to compare them.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from bench.pg_schema import scratch_schema

FLOOR_SQL = (
    "INSERT INTO floor_jobs (id, tenant, type, queue, priority, payload, state,"
    " max_attempts, run_at, created_at, updated_at)"
    " VALUES (%s, 'bench', 'bench.noop', 'default', 0, %s, 'queued', 3, %s, %s, %s)"
)
NO_FLUSH = "&options=-c%20synchronous_commit%3Doff"


def _rounds(
    statements: dict[str, Callable[[int], None]], rounds: int, n: int
) -> dict[str, list[float]]:
    """Microseconds per statement of each, one round of `n` each in turn."""
    times: dict[str, list[float]] = {name: [] for name in statements}
    for run in statements.values():  # warm: plans prepared, pages cached
        for i in range(50):
            run(i)
    for _ in range(rounds):
        for name, run in statements.items():
            start = time.perf_counter()
            for i in range(n):
                run(i)
            times[name].append((time.perf_counter() - start) / n * 1e6)
    return times


def measure(rounds: int, n: int) -> dict[str, list[float]]:
    from chalicelib.ids import new_job_id
    from chalicelib.storage import postgres
    from chalicelib.storage.postgres import connect, parse_url

    # What the store's single enqueue without a key sends (a checkout before stop 43
    # sent ADD_ONE_SQL), so two checkouts can be compared.
    one_sql = getattr(postgres, "ADD_KEYLESS_ONE_SQL", postgres.ADD_ONE_SQL)

    with scratch_schema("bench_enqueue_sql", query=NO_FLUSH) as url:
        settings = parse_url(url)
        with connect(settings) as floor_conn, connect(settings) as spool_conn:
            floor_conn.execute(
                "CREATE TABLE floor_jobs (LIKE jobs INCLUDING DEFAULTS INCLUDING INDEXES)"
            )
            # A cursor kept for each loop, as the store's single enqueue keeps one.
            floor, spool = floor_conn.cursor(), spool_conn.cursor()

            def plain(i: int) -> None:
                now = datetime.now(UTC)
                row = (new_job_id(), json.dumps({"n": i}), now, now, now)
                floor.execute(FLOOR_SQL, row, prepare=True)

            def spools(i: int) -> None:
                now = datetime.now(UTC)
                params: dict[str, Any] = {
                    "now": now, "id": new_job_id(), "tenant": "bench", "type": "bench.noop",
                    "queue": "default", "priority": 0, "payload": json.dumps({"n": i}),
                    "max_attempt": 3, "run_at": now, "key": None, "callback_url": None,
                    "shard": random.randrange(16), "channel": settings.channel,
                }  # fmt: skip
                spool.execute(one_sql, params, prepare=True).fetchall()

            return _rounds({"floor": plain, "spool": spools}, rounds, n)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.pg_enqueue_sql")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--n", type=int, default=400)
    args = parser.parse_args(argv)
    times = measure(args.rounds, args.n)
    for name, values in times.items():
        print(f"{name:>6}: best {min(values):6.1f} us  median {statistics.median(values):6.1f} us")
    extra = [s - f for f, s in zip(times["floor"], times["spool"], strict=True)]
    print(
        f" extra: best-to-best {min(times['spool']) - min(times['floor']):6.1f} us"
        f"  median of the rounds' differences {statistics.median(extra):6.1f} us"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

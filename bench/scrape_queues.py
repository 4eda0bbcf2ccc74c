"""What one /metrics scrape and one dashboard overview cost with N queue names (by hand).

    .venv/bin/python -m bench.scrape_queues                          # SQLite, 200,000 names
    .venv/bin/python -m bench.scrape_queues --stores sqlite postgres redis --queues 200000

Queue names are the client's to choose, and every name ever used keeps its
counter rows for good (a counter that vanished would read as a reset). This
fills a store through `JobStore.add` (so the store's own counters, triggers and
summaries are written as live traffic writes them) with one job in each of N
made-up queue names, beside a few busy queues, then finishes the jobs by hand
as succeeded and purges them, so what is left is history only: counters, and
no jobs. Then it times `Metrics.exposition()` (every store read of a scrape
plus the text) and `views.overview(store, None, ...)` (the dashboard's
overview for every tenant), in process, ROUNDS times after one warm-up call,
and prints the median and the worst.

`--due` (Redis and memory) leaves every job waiting and due instead: N queues with a
due job each, the case where a store that walks the queues holding waiting jobs
walks all N. It also times the store's `oldest_due()` alone (every queue's) and
the overview of the one tenant that owns them (`views.overview(store, tenant,
...)`, what the dashboard serves), and reads the Redis server's own time for one
call of each from INFO commandstats (the "worst" column: the longest single
command, the time the server served no other client; the average per command
for a command run more than once).

Postgres: SPOOL_BENCH_PG_URL (default postgresql://postgres@127.0.0.1:5432/test),
in the schema `bench_scrape`, dropped at the end. Its summaries are folded at each
scrape (migration 0008): one scrape folds what the fill changed, as the scrapes
during a real fill would have, and VACUUM runs, as autovacuum would, before timing.
Redis: SPOOL_BENCH_REDIS_URL (default redis://127.0.0.1:6379/0), under the key
prefix `bench_scrape`, deleted at the end; its jobs are run through the store.
DynamoDB (`--stores dynamodb`): moto in process, whose times are its own; the line
`reads:` says what one scrape reads (requests, items, bytes, read units), which is
what carries over to DynamoDB. moto slows down with every item in the counter
partition: a few thousand names take minutes to fill (run_dynamodb).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.dynamodb_sizes import item_size
from chalicelib.models import NewJob

PG_URL = os.environ.get("SPOOL_BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("SPOOL_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
SCHEMA = "bench_scrape"
ROUNDS = 5
BATCH = 1000
BUSY = ("default", "emails", "images")
TENANT = "bench"


def fill(store: Any, queues: int, tenant: str = "default") -> None:
    """N made-up queue names with one job each, and the busy queues with more."""
    now = datetime.now(UTC)
    names = [f"made-up-{i:07d}" for i in range(queues)] + [q for q in BUSY for _ in range(200)]
    for start in range(0, len(names), BATCH):
        store.add(
            [
                NewJob(
                    id=f"job_{start + i:012d}",
                    type="echo",
                    payload={},
                    run_at=now,
                    tenant=tenant,
                    queue=q,
                )
                for i, q in enumerate(names[start : start + BATCH])
            ]
        )


def finish_and_purge_sqlite(path: str) -> None:
    import sqlite3

    db = sqlite3.connect(path, isolation_level=None)
    micros = int(time.time() * 1e6)
    db.execute("BEGIN")
    # As a finish would write them: the job's state (the triggers keep the counts) and
    # its `succeeded` counter.
    db.execute(
        "INSERT INTO counters (queue, type, event, n) "
        "SELECT queue, type, 'succeeded', COUNT(*) FROM jobs GROUP BY queue, type "
        "ON CONFLICT (queue, type, event) DO UPDATE SET n = n + excluded.n"
    )
    db.execute(
        "UPDATE jobs SET state = 'succeeded', finished_at = ?, updated_at = ?", (micros, micros)
    )
    db.execute("DELETE FROM jobs")
    db.execute("COMMIT")
    db.execute("ANALYZE")
    db.close()


def finish_and_purge_postgres(url: str) -> None:
    from chalicelib.storage import postgres as pg

    with pg.connect(pg.parse_url(url)) as conn:
        conn.execute(
            "INSERT INTO counters (queue, type, event, shard, n) "
            "SELECT queue, type, 'succeeded', 0, count(*) FROM jobs GROUP BY queue, type "
            "ON CONFLICT (queue, type, event, shard) DO UPDATE SET n = counters.n + excluded.n"
        )
        conn.execute("UPDATE jobs SET state = 'succeeded', finished_at = now(), updated_at = now()")
        conn.execute("DELETE FROM jobs")
    with pg.connect(pg.parse_url(url)) as conn:
        conn.autocommit = True
        conn.execute("VACUUM ANALYZE")


def timed(call: Callable[[], Any], rounds: int) -> tuple[float, float]:
    call()
    samples = []
    for _ in range(rounds):
        started = time.perf_counter()
        call()
        samples.append((time.perf_counter() - started) * 1000)
    return statistics.median(samples), max(samples)


def measure(store: Any, rounds: int, due: bool = False) -> list[tuple[str, float, float]]:
    from chalicelib.api.metrics import Metrics
    from chalicelib.config import Settings
    from chalicelib.ui import views

    metrics = Metrics(store, Settings())
    text = metrics.exposition()
    lines = sum(1 for line in text.splitlines() if line and not line.startswith(b"#"))
    rows = [
        (f"scrape ({lines} samples)", *timed(metrics.exposition, rounds)),
        ("overview", *timed(lambda: views.overview(store, None, 60.0), rounds)),
    ]
    if due:
        rows += [
            ("oldest_due() (every queue)", *timed(store.oldest_due, rounds)),
            (
                f"overview of tenant {TENANT!r}",
                *timed(lambda: views.overview(store, TENANT, 60.0), rounds),
            ),
        ]
        # What Redis itself spent on one call (INFO commandstats): time it served no one
        # else. The scrape's oldest-due read is oldest_due() before this change and
        # oldest_due_named(the named queues) after it.
        keep, busiest = metrics.queue_labels.store_request()
        named = sorted(store.queue_totals(keep, busiest).named)
        scrape_read = getattr(store, "oldest_due_named", None)
        rows += (
            []
            if not hasattr(store, "client")
            else [
                (f"  server: {what}", *server_ms(store, call))
                for what, call in (
                    (
                        "the scrape's oldest-due read",
                        store.oldest_due if scrape_read is None else lambda: scrape_read(named),
                    ),
                    ("oldest_due()", store.oldest_due),
                    (f"overview of {TENANT!r}", lambda: views.overview(store, TENANT, 60.0)),
                )
            ]
        )
    return rows


# The commands these reads send themselves. A script's own calls are counted inside its
# EVALSHA and again under their names, so the total counts some twice (ZRANGE, HGETALL
# inside a script): the longest command is the figure that says how long the server
# served no one else.
TOP_LEVEL = ("evalsha", "evalsha_ro", "zrange", "zrangebyscore", "zmscore", "hgetall")


def server_ms(store: Any, call: Callable[[], Any]) -> tuple[float, float]:
    """(the Redis server's time for one call, the longest single command in it) in ms,
    from INFO commandstats (`usec`: time on the server's one thread), over the
    TOP_LEVEL commands; the longest is the average of its kind when a kind ran twice.
    Meaningful on a server nothing else uses (its counts are the server's, not ours)."""

    def stats() -> dict[str, tuple[int, int]]:
        raw = store.client.info("commandstats")
        return {k: (int(v["calls"]), int(v["usec"])) for k, v in raw.items()}

    call()
    before = stats()
    call()
    after = stats()
    total, longest = 0, 0.0
    for name in TOP_LEVEL:
        calls, usec = after.get(f"cmdstat_{name}", (0, 0))
        was_calls, was_usec = before.get(f"cmdstat_{name}", (0, 0))
        if calls > was_calls:
            total += usec - was_usec
            longest = max(longest, (usec - was_usec) / (calls - was_calls))
    return total / 1000, longest / 1000


def run_sqlite(queues: int, rounds: int) -> list[tuple[str, float, float]]:
    from chalicelib.storage.sqlite import SQLiteStore

    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp) / "spool.db")
        store = SQLiteStore(path)
        fill(store, queues)
        store.close()
        finish_and_purge_sqlite(path)
        store = SQLiteStore(path)
        try:
            return measure(store, rounds)
        finally:
            store.close()


def run_postgres(queues: int, rounds: int) -> list[tuple[str, float, float]]:
    from chalicelib.storage import migrations
    from chalicelib.storage import postgres as pg

    url = f"{PG_URL}?schema={SCHEMA}"
    with pg.connect(pg.parse_url(url)) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")
        migrations.migrate(conn, SCHEMA)
    try:
        store = pg.from_url(url)
        fill(store, queues)
        store.close()
        finish_and_purge_postgres(url)
        store = pg.from_url(url)
        try:
            store.queue_totals([], 0)  # the fold of the fill, then what autovacuum does
            with pg.connect(pg.parse_url(url)) as conn:
                conn.execute("VACUUM ANALYZE")
            return measure(store, rounds)
        finally:
            store.close()
    finally:
        with pg.connect(pg.parse_url(PG_URL)) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")


def run_memory(queues: int, rounds: int, due: bool = False) -> list[tuple[str, float, float]]:
    from chalicelib.models import Completion, JobState
    from chalicelib.storage.memory import MemoryStore

    store = MemoryStore()
    if due:
        fill(store, queues, TENANT)
        return measure(store, rounds, due=True)
    fill(store, queues)
    while claimed := store.claim(BATCH, 60):
        store.finish([Completion(j.id, j.lease_token or "", JobState.SUCCEEDED) for j in claimed])
    while store.purge(datetime.now(UTC), 10_000):
        pass
    return measure(store, rounds)


def run_redis(queues: int, rounds: int, due: bool = False) -> list[tuple[str, float, float]]:
    from chalicelib.models import Completion, JobState
    from chalicelib.storage.redis_store import from_url

    url = f"{REDIS_URL}{'&' if '?' in REDIS_URL else '?'}prefix={SCHEMA}"
    store = from_url(url)
    try:
        if due:
            store.queue_totals([], 0)  # the summaries, as a store that was scraped has them
            fill(store, queues, TENANT)
            return measure(store, rounds, due=True)
        fill(store, queues)
        while claimed := store.claim(BATCH, 60):
            store.finish(
                [Completion(j.id, j.lease_token or "", JobState.SUCCEEDED) for j in claimed]
            )
        while store.purge(datetime.now(UTC), 10_000):
            pass
        return measure(store, rounds)
    finally:
        keys = list(store.client.scan_iter(match="{" + SCHEMA + "}:*", count=1000))
        for start in range(0, len(keys), 500):
            store.client.delete(*keys[start : start + 500])
        store.close()


def run_dynamodb(queues: int, rounds: int) -> list[tuple[str, float, float]]:
    """Against moto in process: the time is moto's, not DynamoDB's; what carries over is
    the requests, items and bytes one scrape reads (its `reads:` line).

    The history is written through the store's own counter machinery
    (Transactions.counter_actions: the keys, shards and attributes a finish writes):
    an `enqueued` and a `succeeded` counter per name, as the add and the finish of its
    one job leave them once it is purged (the busy queues get theirs by the hundred)."""
    from moto import mock_aws

    from chalicelib.clock import SystemClock
    from chalicelib.storage.dynamodb import DynamoStore
    from chalicelib.storage.dynamodb_aws import DynamoConfig
    from chalicelib.storage.dynamodb_txn import Unit

    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    with mock_aws():
        store = DynamoStore(DynamoConfig(table="bench", create=True), SystemClock())
        names = [f"made-up-{i:07d}" for i in range(queues)]
        per_transaction = 50  # two counters each: 100 actions, a transaction's most
        for start in range(0, len(names), per_transaction):
            counts = [
                (q, "echo", event, 1)
                for q in names[start : start + per_transaction]
                for event in ("enqueued", "succeeded")
            ]
            store._tx.once([Unit([], [], counts)])
        store._tx.once(
            [Unit([], [], [(q, "echo", e, 200) for q in BUSY for e in ("enqueued", "succeeded")])]
        )
        reads = {"requests": 0, "items": 0, "bytes": 0}

        def count(parsed: Any, model: Any, **_: Any) -> None:
            if model.name in ("Query", "Scan"):
                reads["requests"] += 1
                items = parsed.get("Items", [])
                reads["items"] += len(items)
                reads["bytes"] += sum(item_size(item) for item in items)

        from chalicelib.api.metrics import Metrics
        from chalicelib.config import Settings

        Metrics(store, Settings()).exposition()  # a first scrape, as measure() makes
        store.ddb.meta.events.register("after-call.dynamodb.*", count)
        Metrics(store, Settings()).exposition()  # one scrape, counted
        store.ddb.meta.events.unregister("after-call.dynamodb.*", count)
        units = reads["bytes"] / 4096  # consistent reads: 1 unit per 4 KB read
        rows = measure(store, rounds)
        rows.insert(
            1,
            (
                f"  reads: {reads['requests']} requests, {reads['items']:,} items, "
                f"{reads['bytes'] / 1e6:.2f} MB, about {units:,.0f} read units",
                0.0,
                0.0,
            ),
        )
        store.close()
        return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--queues", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=ROUNDS)
    parser.add_argument(
        "--stores",
        nargs="+",
        default=["sqlite"],
        choices=["sqlite", "postgres", "redis", "memory", "dynamodb"],
    )
    parser.add_argument(
        "--due", action="store_true", help="leave every job waiting and due (Redis, memory)"
    )
    args = parser.parse_args()
    if args.due and not set(args.stores) <= {"redis", "memory"}:
        parser.error("--due is for --stores redis and memory only")
    runners = {
        "sqlite": run_sqlite,
        "postgres": run_postgres,
        "redis": run_redis,
        "memory": run_memory,
        "dynamodb": run_dynamodb,
    }
    for name in args.stores:
        started = time.perf_counter()
        if args.due:
            rows = (run_memory if name == "memory" else run_redis)(args.queues, args.rounds, True)
        else:
            rows = runners[name](args.queues, args.rounds)
        what = "queues with a due job each" if args.due else "queue names"
        print(
            f"{name}, {args.queues:,} {what} (filled in {time.perf_counter() - started:.0f} s), "
            f"load {' '.join(f'{x:.2f}' for x in os.getloadavg())}"
        )
        for what, median, worst in rows:
            if what.startswith("  reads"):
                print(f"  {what}")
            elif what.startswith("  server"):
                print(f"  {what:<32} longest command {worst:7.2f} ms (all: {median:.1f} ms)")
            else:
                print(f"  {what:<32} median {median:9.1f} ms   worst {worst:9.1f} ms")


if __name__ == "__main__":
    main()

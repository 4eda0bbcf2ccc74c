"""Spool on Postgres beside pgqueuer, Procrastinate and raw psycopg (run by hand).

    bench/setup_bench_env.sh                 # once: .bench-venv with pgqueuer, Procrastinate
    .venv/bin/python -m bench.pg_bench       # all systems, prints a table
    .venv/bin/python -m bench.pg_bench --write-docs   # also fills docs/benchmarks.md

Every system runs in the same run against the same server and database
(127.0.0.1:5432/test), each in its own schema, with no-op jobs:

- enqueue single: N jobs, one call each, from one process (the API's shape);
- enqueue batch: 20,000 jobs in batches of 1,000;
- drain: 20,000 due jobs, 1 and 4 worker processes that start together on a
  signal once connected; the clock stops when the last job is recorded done;
- pickup latency: one idle worker; a job is enqueued every 20 ms; latency is
  the handler's start minus the moment before the enqueue call (same clock).

Workers run as separate processes (`--role ...` below), the competitors under
.bench-venv's Python so their dependencies never touch Spool's environment.
"raw" is psycopg running Spool's own SQL statements (claim, finish, add)
without the engine around them: the floor for what Spool's Python costs.
Only stdlib is imported at module level, so the roles run in either venv.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.plotting import pyplot, save

ROOT = Path(__file__).resolve().parent.parent
BENCH_PY = ROOT / ".bench-venv" / "bin" / "python"
MAIN_PY = Path(sys.executable)
BASE_URL = os.environ.get("SPOOL_BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
SYSTEMS = ("spool", "raw", "pgqueuer", "procrastinate")
SCHEMA = {s: f"bench_{s}" for s in SYSTEMS}
# Threads per Spool worker process. No-op handlers gain nothing from more threads
# (they only add switching); real I/O-bound handlers want 16-64.
SPOOL_CONCURRENCY = int(os.environ.get("BENCH_SPOOL_CONCURRENCY", "8"))
PGQ_BATCH = 10  # pgqueuer's default and documented benchmark batch size
PROCRASTINATE_CONCURRENCY = 10


# == roles: what runs inside each worker / client process =======================


def _emit(kind: str, *values: object) -> None:
    print(kind, *values, flush=True)


def _wait_for_go() -> None:
    _emit("ready")
    line = sys.stdin.readline()
    if line.strip() != "go":
        sys.exit(0)


def _spool_url(schema: str) -> str:
    return f"{BASE_URL}?schema={schema}&pool_max=20"


def role_spool_worker(schema: str, stamp: bool) -> None:
    from chalicelib.handlers import Registry
    from chalicelib.storage import open_store
    from chalicelib.worker import Worker, WorkerConfig

    registry = Registry()

    @registry.handler("noop", max_attempts=3)
    def noop(payload: dict[str, Any]) -> None:
        if stamp:
            _emit("stamp", payload.get("i"), time.time())

    store = open_store(_spool_url(schema))
    worker = Worker(
        store, registry, WorkerConfig(concurrency=1 if stamp else SPOOL_CONCURRENCY, batch_size=100)
    )
    signal.signal(signal.SIGTERM, lambda *_: worker.stop())
    _wait_for_go()
    worker.run()
    store.close()


def role_raw_worker(schema: str, stamp: bool) -> None:
    """Spool's statements with nothing around them: claim 100, finish them, repeat."""
    from datetime import UTC, datetime, timedelta

    from chalicelib.ids import new_lease_token
    from chalicelib.storage import postgres as pg
    from chalicelib.storage.history import history_limit

    settings = pg.parse_url(_spool_url(schema))
    conn = pg.connect(settings)
    listen = pg.connect(settings)
    listen.execute(f"LISTEN {settings.channel}")
    stop = False

    def on_term(*_: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_term)
    claim_sql = pg.CLAIM_SQL.format(filters="")
    lease = timedelta(seconds=60)
    kept = {"keep": history_limit(), "hooks_kept": 0}  # read once, not in the floor's loop
    _wait_for_go()
    while not stop:
        now = datetime.now(UTC)
        with conn.pipeline():
            conn.execute(pg.REAP_SQL, {"now": now, "error": "expired", "shard": 0, **kept})
            cur = conn.execute(
                claim_sql,
                {
                    "now": now,
                    "limit": 100,
                    "token": new_lease_token(),
                    "expires": now + lease,
                    "unstarted": None,  # claimed started, as a claim for idle threads
                    "late": 0,
                    "worker": "raw",
                },
            )
        rows = cur.fetchall()
        if not rows:
            for _ in listen.notifies(timeout=1.0, stop_after=1):
                pass
            continue
        if stamp:
            for r in rows:
                _emit("stamp", json.loads(r[5]).get("i"), time.time())
        conn.execute(
            pg.FINISH_SQL,
            {
                "now": now,
                "ids": [r[0] for r in rows],
                "tokens": [r[10] for r in rows],
                "states": ["succeeded"] * len(rows),
                "results": ["null"] * len(rows),
                "errors": [None] * len(rows),
                "retry_ats": [None] * len(rows),
                "attempts": [None] * len(rows),
                "shard": os.getpid() % pg.COUNTER_SHARDS,
                **kept,
            },
        )
    conn.close()
    listen.close()


def _pgq_env(schema: str) -> None:
    os.environ["PGQUEUER_SCHEMA"] = schema
    # "balanced": the queue table is logged like Spool's; only pgqueuer's log and
    # statistics tables are unlogged (pgqueuer's documented performance setting).
    os.environ["PGQUEUER_DURABILITY"] = "balanced"


def role_pgqueuer_worker(schema: str, stamp: bool) -> None:
    _pgq_env(schema)
    import asyncio

    import asyncpg
    import uvloop
    from pgqueuer.db import AsyncpgDriver
    from pgqueuer.models import Job
    from pgqueuer.qm import QueueManager
    from pgqueuer.queries import Queries

    async def main() -> None:
        conn = await asyncpg.connect(BASE_URL)
        qm = QueueManager(Queries(AsyncpgDriver(conn)))

        @qm.entrypoint("noop")
        async def noop(job: Job) -> None:
            if stamp:
                _emit("stamp", json.loads(job.payload or b"{}").get("i"), time.time())

        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, qm.shutdown.set)
        await loop.run_in_executor(None, _wait_for_go)
        await qm.run(batch_size=PGQ_BATCH)
        await conn.close()

    uvloop.run(main())


def _procrastinate_app(schema: str) -> Any:
    import procrastinate

    connector = procrastinate.PsycopgConnector(
        conninfo=BASE_URL, kwargs={"options": f"-c search_path={schema}"}
    )
    app = procrastinate.App(connector=connector)

    @app.task(name="noop")
    async def noop(i: int = 0) -> None:
        if os.environ.get("BENCH_STAMP"):
            _emit("stamp", i, time.time())

    return app


def role_procrastinate_worker(schema: str, stamp: bool) -> None:
    import asyncio

    if stamp:
        os.environ["BENCH_STAMP"] = "1"
    app = _procrastinate_app(schema)

    async def main() -> None:
        async with app.open_async():
            await asyncio.get_running_loop().run_in_executor(None, _wait_for_go)
            await app.run_worker_async(
                concurrency=PROCRASTINATE_CONCURRENCY, wait=True, listen_notify=True
            )

    asyncio.run(main())


# -- clients: setup, enqueue --------------------------------------------------


def _timed(fn: Callable[[], object]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def role_spool_client(schema: str, action: str, n: int) -> None:
    from chalicelib.handlers import Registry
    from chalicelib.service import EnqueueRequest, Service
    from chalicelib.storage import migrations, open_store
    from chalicelib.storage import postgres as pg

    if action == "setup":
        settings = pg.parse_url(_spool_url(schema))
        with pg.connect(settings) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
            migrations.migrate(conn, schema)
        return
    registry = Registry()
    registry.handler("noop", max_attempts=3)(lambda payload: None)
    store = open_store(_spool_url(schema))
    service = Service(store, registry)
    if action == "single":
        seconds = _timed(
            lambda: [service.enqueue([EnqueueRequest(type="noop")], "bench") for _ in range(n)]
        )
    elif action == "batch":

        def batches() -> None:
            for start in range(0, n, 1000):
                service.enqueue(
                    [EnqueueRequest(type="noop") for _ in range(min(1000, n - start))], "bench"
                )

        seconds = _timed(batches)
    else:  # pickup: one job every 20 ms, each stamped with its index
        sent = {}
        for i in range(n):
            sent[i] = time.time()
            service.enqueue([EnqueueRequest(type="noop", payload={"i": i})], "bench")
            time.sleep(0.02)
        _emit("sent", json.dumps(sent))
        seconds = 0.0
    _emit("seconds", seconds)
    store.close()


def role_raw_client(schema: str, action: str, n: int) -> None:
    from datetime import UTC, datetime

    from chalicelib.ids import new_job_id
    from chalicelib.storage import postgres as pg

    if action == "setup":
        role_spool_client(schema, "setup", n)
        return
    settings = pg.parse_url(_spool_url(schema))
    conn = pg.connect(settings)

    def add(count: int, payload: str = "{}") -> None:
        now = datetime.now(UTC)
        conn.execute(
            pg.ADD_SQL,
            {
                "now": now,
                "ids": [new_job_id() for _ in range(count)],
                "tenants": ["bench"] * count,
                "types": ["noop"] * count,
                "queues": ["default"] * count,
                "priorities": [0] * count,
                "payloads": [payload] * count,
                "max_attempts": [3] * count,
                "run_ats": [now] * count,
                "keys": [None] * count,
                "callback_urls": [None] * count,
                "shard": os.getpid() % pg.COUNTER_SHARDS,
                "channel": settings.channel,
            },
        ).fetchall()

    if action == "single":

        def singles() -> None:
            for _ in range(n):
                add(1)

        seconds = _timed(singles)
    elif action == "batch":

        def batches() -> None:
            for s in range(0, n, 1000):
                add(min(1000, n - s))

        seconds = _timed(batches)
    else:
        sent = {}
        for i in range(n):
            sent[i] = time.time()
            add(1, json.dumps({"i": i}))
            time.sleep(0.02)
        _emit("sent", json.dumps(sent))
        seconds = 0.0
    _emit("seconds", seconds)
    conn.close()


def role_pgqueuer_client(schema: str, action: str, n: int) -> None:
    _pgq_env(schema)
    import asyncpg
    import uvloop
    from pgqueuer.db import AsyncpgDriver
    from pgqueuer.queries import Queries

    async def main() -> float:
        conn = await asyncpg.connect(BASE_URL)
        queries = Queries(AsyncpgDriver(conn))
        if action == "setup":
            await conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
            await queries.install()
            return 0.0
        started = time.perf_counter()
        if action == "single":
            for _ in range(n):
                await queries.enqueue("noop", None, 0)
        elif action == "batch":
            for s in range(0, n, 1000):
                k = min(1000, n - s)
                await queries.enqueue(["noop"] * k, [None] * k, [0] * k)
        else:
            import asyncio

            sent = {}
            for i in range(n):
                sent[i] = time.time()
                await queries.enqueue("noop", json.dumps({"i": i}).encode(), 0)
                await asyncio.sleep(0.02)
            _emit("sent", json.dumps(sent))
        seconds = time.perf_counter() - started
        await conn.close()
        return seconds

    _emit("seconds", uvloop.run(main()))


def role_procrastinate_client(schema: str, action: str, n: int) -> None:
    import asyncio

    app = _procrastinate_app(schema)

    async def main() -> float:
        async with app.open_async():
            if action == "setup":
                await app.connector.execute_query_async(
                    f"DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema}"
                )
                await app.schema_manager.apply_schema_async()
                return 0.0
            task = app.tasks["noop"]
            started = time.perf_counter()
            if action == "single":
                for _ in range(n):
                    await task.defer_async()
            elif action == "batch":
                for s in range(0, n, 1000):
                    await task.batch_defer_async(*({} for _ in range(min(1000, n - s))))
            else:
                sent = {}
                for i in range(n):
                    sent[i] = time.time()
                    await task.defer_async(i=i)
                    await asyncio.sleep(0.02)
                _emit("sent", json.dumps(sent))
            return time.perf_counter() - started

    _emit("seconds", asyncio.run(main()))


WORKERS = {
    "spool": role_spool_worker,
    "raw": role_raw_worker,
    "pgqueuer": role_pgqueuer_worker,
    "procrastinate": role_procrastinate_worker,
}
CLIENTS = {
    "spool": role_spool_client,
    "raw": role_raw_client,
    "pgqueuer": role_pgqueuer_client,
    "procrastinate": role_procrastinate_client,
}
# How the orchestrator sees progress: jobs not yet done (cheap: partial indexes or a
# table that only holds unfinished jobs).
REMAINING_SQL = {
    "spool": "SELECT count(*) FROM bench_spool.jobs"
    " WHERE state IN ('queued', 'running', 'retrying')",
    "raw": "SELECT count(*) FROM bench_raw.jobs WHERE state IN ('queued', 'running', 'retrying')",
    # pgqueuer deletes a job from its queue table when it finishes.
    "pgqueuer": "SELECT count(*) FROM bench_pgqueuer.pgqueuer",
    "procrastinate": "SELECT count(*) FROM bench_procrastinate.procrastinate_jobs"
    " WHERE status IN ('todo', 'doing')",
}
CLEAR_SQL = {
    # CASCADE: webhook_deliveries (migration 0005) references jobs.
    "spool": "TRUNCATE bench_spool.jobs, bench_spool.counters CASCADE",
    "raw": "TRUNCATE bench_raw.jobs, bench_raw.counters CASCADE",
    "pgqueuer": "TRUNCATE bench_pgqueuer.pgqueuer, bench_pgqueuer.pgqueuer_log,"
    " bench_pgqueuer.pgqueuer_statistics",
    "procrastinate": "TRUNCATE bench_procrastinate.procrastinate_jobs CASCADE",
}


# == the orchestrator ============================================================


@dataclass
class Result:
    system: str
    single_per_s: float = 0.0
    single_ms: float = 0.0
    batch_per_s: float = 0.0
    drain: dict[int, float] = field(default_factory=dict)  # workers -> jobs/s
    pickup_p50_ms: float = 0.0
    pickup_p99_ms: float = 0.0
    notes: list[str] = field(default_factory=list)


def _python_for(system: str) -> Path:
    return MAIN_PY if system in ("spool", "raw") else BENCH_PY


def _role_cmd(system: str, *args: str) -> list[str]:
    return [str(_python_for(system)), "-m", "bench.pg_bench", "--role", *args]


def _client(system: str, action: str, n: int) -> dict[str, str]:
    out = subprocess.run(
        _role_cmd(system, "client", system, action, str(n)),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    if out.returncode != 0:
        raise RuntimeError(f"{system} {action} failed:\n{out.stderr[-3000:]}")
    found: dict[str, str] = {}
    for line in out.stdout.splitlines():
        kind, _, rest = line.partition(" ")
        found[kind] = rest
    return found


def _db() -> Any:
    import psycopg

    return psycopg.connect(BASE_URL, autocommit=True)


def _remaining(conn: Any, system: str) -> int:
    row = conn.execute(REMAINING_SQL[system]).fetchone()
    return int(row[0])


def _start_workers(system: str, n: int, stamp: bool = False) -> list[subprocess.Popen[str]]:
    procs = []
    for _ in range(n):
        args = ["worker", system] + (["stamp"] if stamp else [])
        procs.append(
            subprocess.Popen(
                _role_cmd(system, *args),
                cwd=ROOT,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                text=True,
                bufsize=1,
            )
        )
    for p in procs:
        assert p.stdout is not None
        line = p.stdout.readline().strip()
        if line != "ready":
            raise RuntimeError(f"{system} worker did not start (said {line!r})")
    return procs


def _go(procs: list[subprocess.Popen[str]]) -> None:
    for p in procs:
        assert p.stdin is not None
        p.stdin.write("go\n")
        p.stdin.flush()


def _stop(procs: list[subprocess.Popen[str]]) -> None:
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 15
    for p in procs:
        try:
            p.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def bench_system(
    system: str, jobs: int, singles: int, workers: tuple[int, ...], bar: Any
) -> Result:
    result = Result(system)
    conn = _db()
    try:
        _client(system, "setup", 0)
        found = _client(system, "single", singles)
        seconds = float(found["seconds"])
        result.single_per_s = singles / seconds
        result.single_ms = seconds / singles * 1000
        conn.execute(CLEAR_SQL[system])
        bar.update()
        for n in workers:
            found = _client(system, "batch", jobs)
            if not result.batch_per_s:
                result.batch_per_s = jobs / float(found["seconds"])
            conn.execute("ANALYZE")
            procs = _start_workers(system, n)
            try:
                _go(procs)
                started = time.perf_counter()
                deadline = started + 600
                while _remaining(conn, system) > 0:
                    if time.perf_counter() > deadline:
                        raise RuntimeError(f"{system} did not drain {jobs} jobs in 600 s")
                    time.sleep(0.02)
                result.drain[n] = jobs / (time.perf_counter() - started)
            finally:
                _stop(procs)
            conn.execute(CLEAR_SQL[system])
            bar.update()
        result.pickup_p50_ms, result.pickup_p99_ms = _pickup(system)
        bar.update()
    finally:
        conn.close()
    return result


def _pickup(system: str, n: int = 200) -> tuple[float, float]:
    import threading

    [proc] = _start_workers(system, 1, stamp=True)
    stamps: dict[int, float] = {}

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            parts = line.split()
            if len(parts) == 3 and parts[0] == "stamp":
                stamps[int(parts[1])] = float(parts[2])

    reader = threading.Thread(target=read, daemon=True)
    try:
        _go([proc])
        reader.start()
        time.sleep(1.0)  # let it subscribe and go idle
        sent = {int(k): v for k, v in json.loads(_client(system, "pickup", n)["sent"]).items()}
        deadline = time.monotonic() + 30
        while len(stamps) < n and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        _stop([proc])
    waits = sorted((stamps[i] - sent[i]) * 1000 for i in sent if i in stamps)
    if len(waits) < n:
        raise RuntimeError(f"{system}: only {len(waits)} of {n} pickups seen")
    return statistics.median(waits), waits[min(len(waits) - 1, int(len(waits) * 0.99))]


def render(results: list[Result], jobs: int, singles: int, command: str) -> str:
    def f(x: float) -> str:
        return f"{x:,.0f}"

    base = next((r for r in results if r.system == "pgqueuer"), None)
    lines = [
        "## Postgres",
        "",
        f"No-op jobs on the local Postgres 15 (`test` database, one schema per system), "
        f"2 cores shared by the server, the workers and the client. Drain: {jobs:,} due jobs, "
        "worker processes started together once connected; the clock stops when the last "
        "job is recorded done. Enqueue single: "
        f"{singles:,} one-job calls in a row; batch: {jobs:,} jobs in batches of 1,000. "
        "Pickup: one idle worker, a job every 20 ms, from just before the enqueue call to "
        "the handler's first line.",
        "",
        "| system | drain, 1 process (jobs/s) | drain, 4 processes (jobs/s) "
        "| enqueue single (jobs/s) | enqueue batch (jobs/s) | pickup p50 / p99 (ms) |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in results:
        lines.append(
            f"| {r.system} | {f(r.drain.get(1, 0))} | {f(r.drain.get(4, 0))} "
            f"| {f(r.single_per_s)} | {f(r.batch_per_s)} "
            f"| {r.pickup_p50_ms:.1f} / {r.pickup_p99_ms:.1f} |"
        )
    spool = next((r for r in results if r.system == "spool"), None)
    if spool and base:
        lines += [
            "",
            "Spool against pgqueuer, same run: drain "
            + ", ".join(
                f"{n} process{'es' if n > 1 else ''} x{spool.drain.get(n, 0) / base.drain[n]:.2f}"
                for n in sorted(base.drain)
                if base.drain.get(n)
            )
            + f"; pickup p50 {spool.pickup_p50_ms:.1f} ms (target <= 5 ms).",
        ]
    lines += [
        "",
        "Settings. Spool: `spool worker` defaults, concurrency "
        f"{SPOOL_CONCURRENCY} (claims of up to twice that, completions written in batches), "
        "pool_max 20; its claim transactions commit without waiting for the WAL flush "
        "(a server crash can undo a claim, never an enqueue or a result). "
        "raw: psycopg running Spool's own claim (batches of 100), finish and add statements "
        "in a bare loop. pgqueuer: asyncpg driver with uvloop (its documented fast path), "
        f"batch size {PGQ_BATCH}, durability `balanced` (queue table logged, as Spool's is). "
        f"Procrastinate: psycopg connector, async task, concurrency {PROCRASTINATE_CONCURRENCY}, "
        "LISTEN/NOTIFY on. Enqueues and results are durable in every system (logged "
        "tables, synchronous_commit on). The machine is shared with other work, so "
        "figures move by 2x between runs; compare rows of the same run only.",
        "",
        "```sh",
        "bench/setup_bench_env.sh        # .bench-venv: pgqueuer, Procrastinate, asyncpg",
        command,
        "```",
    ]
    return "\n".join(lines)


PLOT = ROOT / "docs" / "img" / "pg_bench.png"


def plot(results: list[Result]) -> bool:
    """Drain and enqueue per system, side by side (docs/img/pg_bench.png)."""
    plt = pyplot()
    if plt is None:
        return False
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    names = [r.system for r in results]
    xs = list(range(len(names)))
    counts = sorted({n for r in results for n in r.drain})
    width = 0.8 / max(1, len(counts))
    for k, n in enumerate(counts):
        left.bar(
            [x - 0.4 + width * (k + 0.5) for x in xs],
            [r.drain.get(n, 0) for r in results],
            width=width,
            label=f"{n} process{'es' if n > 1 else ''}",
        )
    left.set_xticks(xs, names)
    left.set_ylabel("jobs per second")
    left.set_title("Drain of no-op jobs on Postgres (higher is better)")
    left.legend(fontsize=8)
    right.bar([x - 0.2 for x in xs], [r.single_per_s for r in results], width=0.4, label="single")
    right.bar([x + 0.2 for x in xs], [r.batch_per_s for r in results], width=0.4, label="batch")
    right.set_yscale("log")
    right.set_xticks(xs, names)
    right.set_ylabel("jobs per second (log)")
    right.set_title("Enqueue")
    right.legend(fontsize=8)
    save(fig, PLOT)
    return True


def write_docs(text: str) -> None:
    path = ROOT / "docs" / "benchmarks.md"
    doc = path.read_text(encoding="utf-8")
    start, end = "<!-- section:postgres -->", "<!-- /section:postgres -->"
    head, rest = doc.split(start, 1)
    _, tail = rest.split(end, 1)
    path.write_text(f"{head}{start}\n{text}\n{end}{tail}", encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--role"]:
        kind, system = argv[1], argv[2]
        if kind == "worker":
            WORKERS[system](SCHEMA[system], "stamp" in argv[3:])
        else:
            CLIENTS[system](SCHEMA[system], argv[3], int(argv[4]))
        return 0
    parser = argparse.ArgumentParser(prog="python -m bench.pg_bench")
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--singles", type=int, default=2_000)
    parser.add_argument("--workers", default="1,4")
    parser.add_argument("--systems", default=",".join(SYSTEMS))
    parser.add_argument("--write-docs", action="store_true")
    args = parser.parse_args(argv)
    systems = [s for s in args.systems.split(",") if s]
    workers = tuple(int(n) for n in args.workers.split(","))
    if any(_python_for(s) == BENCH_PY for s in systems) and not BENCH_PY.exists():
        print("run bench/setup_bench_env.sh first (or pass --systems spool,raw)", file=sys.stderr)
        return 2
    from tqdm import tqdm

    results = []
    with tqdm(total=len(systems) * (len(workers) + 2), unit="step") as bar:
        for system in systems:
            bar.set_description(system)
            results.append(bench_system(system, args.jobs, args.singles, workers, bar))
    command = ".venv/bin/python -m bench.pg_bench " + " ".join(argv)
    text = render(results, args.jobs, args.singles, command.strip())
    print(text)
    if args.write_docs:
        if plot(results):
            text += "\n\n![Drain and enqueue by system](img/pg_bench.png)"
        write_docs(text)
        print("wrote docs/benchmarks.md (section postgres)", file=sys.stderr)
    with _db() as conn:
        for system in systems:
            conn.execute(f"DROP SCHEMA IF EXISTS {SCHEMA[system]} CASCADE")
    return 0


if __name__ == "__main__":
    sys.exit(main())

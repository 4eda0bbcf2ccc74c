"""The worker as users run it: `spool worker` in its own process, jobs enqueued from another.

    .venv/bin/python -m bench.worker_paths [--stores sqlite,postgres]
        [--durability normal,full] [--samples 300] [--write]

For each store and durability mode, one run measures:
- start-up: a job is waiting; time from starting `spool worker` to its handler running
  (median of 3 fresh processes);
- idle pickup: one job at a time enqueued to an idle worker, from the enqueue's
  acknowledgement to the handler's start (start) and to the result being written
  (done), p50 and p99;
- idle cost: the worker's CPU time over 10 s with nothing to do, as % of one core;
- drain: 1,000 jobs enqueued at once to the idle worker, jobs/s from the first enqueue
  to the last result, and how many results waited more than 0.5 s to be written after
  their handler ran (the symptom of a lost wake-up).

The handler (bench/pickup_handlers.py) returns the wall-clock time it started; the
store stamps finished_at with the worker's clock. Both processes read the same system
clock, so the differences are real latencies. --write replaces the worker-paths section
of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from bench.docs_section import markers, write_section

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "benchmarks.md"
SECTION = "worker-paths"
SECTION_START, SECTION_END = markers(SECTION)
PG_BASE = "postgresql://postgres@127.0.0.1:5432/test"
SPOOL = ROOT / ".venv" / "bin" / "spool"
DRAIN_N = 1_000
IDLE_SECONDS = 10.0
LATE_SECONDS = 0.5


@dataclass
class Figures:
    store: str
    durability: str
    startup_s: float = 0.0
    start_ms: list[float] = field(default_factory=list)
    done_ms: list[float] = field(default_factory=list)
    idle_cpu_pct: float = 0.0
    drain_rate: float = 0.0
    late_results: int = 0


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    rank = min(len(ordered) - 1, max(0, round(pct / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


@contextmanager
def store_url(store: str, durability: str) -> Iterator[str]:
    """A fresh, empty store of the given kind; removed afterwards."""
    if store == "sqlite":
        directory = tempfile.mkdtemp(prefix="spool-paths-")
        try:
            query = "?synchronous=full" if durability == "full" else ""
            yield f"sqlite:///{directory}/spool.db{query}"
        finally:
            shutil.rmtree(directory, ignore_errors=True)
        return
    import psycopg

    from chalicelib.storage import migrations
    from chalicelib.storage.postgres import connect, parse_url

    schema = f"bench_paths_{secrets.token_hex(4)}"
    query = "&durability=full" if durability == "full" else ""
    url = f"{PG_BASE}?schema={schema}{query}"
    with connect(parse_url(url)) as conn:
        migrations.migrate(conn, schema)
    try:
        yield url
    finally:
        with psycopg.connect(PG_BASE, autocommit=True) as admin:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE pid <> pg_backend_pid() AND application_name = %s",
                (schema,),
            )
            admin.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def start_worker(url: str) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "SPOOL_STORE_URL": url,
        "SPOOL_HANDLERS": "bench.pickup_handlers",
        "PYTHONPATH": str(ROOT),
    }
    return subprocess.Popen(
        [str(SPOOL), "worker"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class Client:
    """The enqueuing side: the engine's own Service on the same store URL."""

    def __init__(self, url: str) -> None:
        from chalicelib.handlers import Registry
        from chalicelib.service import EnqueueRequest, Service
        from chalicelib.storage import open_store

        registry = Registry()

        @registry.handler("bench.stamp", max_attempts=1)
        def stamp(payload: dict[str, Any]) -> float:  # never run here: the worker runs it
            return time.time()

        self.store = open_store(url)
        self.service = Service(self.store, registry)
        self.request = EnqueueRequest

    def enqueue(self, n: int = 1) -> list[str]:
        requests = [self.request(type="bench.stamp", payload={"i": i}) for i in range(n)]
        return [r.job.id for r in self.service.enqueue(requests, "bench")]

    def wait_done(self, job_id: str, timeout: float = 30.0) -> tuple[float, float]:
        """(handler start, finished_at) as epoch seconds, once the result is written."""
        from chalicelib.models import JobState

        end = time.monotonic() + timeout
        while time.monotonic() < end:
            job = self.store.get(job_id)
            if job is not None and job.state is JobState.SUCCEEDED:
                assert job.finished_at is not None
                return float(job.result), job.finished_at.timestamp()  # type: ignore[arg-type]
            time.sleep(0.0002)
        raise RuntimeError(f"job {job_id} not finished within {timeout:g}s")

    def close(self) -> None:
        self.store.close()


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])  # utime, stime
    return ticks / os.sysconf("SC_CLK_TCK")


def measure(store: str, durability: str, samples: int, bar: Any) -> Figures:
    figures = Figures(store, durability)
    with store_url(store, durability) as url:
        client = Client(url)
        try:
            startups = []
            worker = None
            for _ in range(3):
                job_id = client.enqueue()[0]
                began = time.time()
                worker = start_worker(url)
                started, _ = client.wait_done(job_id)
                startups.append(started - began)
                if len(startups) < 3:
                    stop(worker)
            figures.startup_s = statistics.median(startups)
            bar.update(1)
            assert worker is not None
            try:
                for i in range(samples + 10):
                    time.sleep(random.uniform(0.02, 0.05))  # idle again before each job
                    job_id = client.enqueue()[0]
                    acked = time.time()
                    started, finished = client.wait_done(job_id)
                    if i >= 10:  # the first few warm connections and threads
                        figures.start_ms.append(max(0.0, started - acked) * 1000)
                        figures.done_ms.append(max(0.0, finished - acked) * 1000)
                bar.update(1)
                time.sleep(1.0)
                before = cpu_seconds(worker.pid)
                time.sleep(IDLE_SECONDS)
                figures.idle_cpu_pct = 100 * (cpu_seconds(worker.pid) - before) / IDLE_SECONDS
                bar.update(1)
                first = time.time()
                ids: list[str] = []
                for _ in range(DRAIN_N // 100):
                    ids += client.enqueue(100)
                done = [client.wait_done(job_id) for job_id in ids]
                last = max(finished for _, finished in done)
                figures.drain_rate = DRAIN_N / (last - first)
                figures.late_results = sum(1 for s, f in done if f - s > LATE_SECONDS)
                bar.update(1)
            finally:
                stop(worker)
        finally:
            client.close()
    return figures


def table(results: list[Figures]) -> str:
    rows = [
        "| store | durability | start-up to first job | pickup start p50 / p99 | "
        "pickup done p50 / p99 | idle worker CPU | drain 1,000 | results late > 0.5 s |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for f in results:
        rows.append(
            f"| {f.store} | {f.durability} | {f.startup_s:.2f} s "
            f"| {percentile(f.start_ms, 50):.2f} / {percentile(f.start_ms, 99):.2f} ms "
            f"| {percentile(f.done_ms, 50):.2f} / {percentile(f.done_ms, 99):.2f} ms "
            f"| {f.idle_cpu_pct:.2f}% | {f.drain_rate:,.0f}/s | {f.late_results} |"
        )
    return "\n".join(rows)


def render(results: list[Figures], command: str, samples: int, load: tuple[float, ...]) -> str:
    return f"""{SECTION_START}
## The worker as users run it (`spool worker`, another process enqueuing)

```sh
{command}
```

{os.cpu_count()} cores, Python {platform.python_version()}; 1-minute load average
{load[0]:.2f} before the run and {os.getloadavg()[0]:.2f} after it (other work shares the
machine). `spool worker`
with its defaults (concurrency 8, INFO logs) runs a handler that returns the time it
started; the bench process enqueues through the engine's `Service` on the same store and
polls for the result. Pickup "start" is the enqueue's acknowledgement to the handler
starting; "done" is to the result being written (what a caller polling for it can see).
{samples} idle pickups per row, each after 20-50 ms of idleness. Idle CPU is the worker's
CPU time over {IDLE_SECONDS:g} s with nothing to do. The drain enqueues 1,000 jobs in
batches of 100 to the idle worker; "results late" counts results written more than
{LATE_SECONDS:g} s after their handler started (a lost wake-up leaves them `running` until
the 1 s idle poll). Durability `full`: SQLite `synchronous=FULL` (an fsync per commit);
Postgres claims committed with `synchronous_commit` on too (docs/self-hosting.md).

{table(results)}

Goals (issue 16): pickup p50 <= 2 ms and p99 <= 10 ms, idle worker <= 1% of a core,
start-up <= 0.25 s, no late results.
{SECTION_END}"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.worker_paths")
    parser.add_argument("--stores", default="sqlite,postgres")
    parser.add_argument("--durability", default="normal,full")
    parser.add_argument("--samples", type=int, default=300)
    parser.add_argument("--write", action="store_true")
    args = parser.parse_args(argv)
    for name in ("AWS_EC2_METADATA_DISABLED",):
        os.environ.setdefault(name, "true")
    load = os.getloadavg()
    combos = [(s, d) for s in args.stores.split(",") for d in args.durability.split(",") if s and d]
    results = []
    with tqdm(total=4 * len(combos), desc="worker paths", unit="step") as bar:
        for store, durability in combos:
            bar.set_postfix_str(f"{store}/{durability}")
            results.append(measure(store, durability, args.samples, bar))
    command = "python -m bench.worker_paths " + " ".join(argv if argv is not None else sys.argv[1:])
    text = render(results, command.strip(), args.samples, load)
    print(table(results))
    if args.write:
        write_section(SECTION, text)
        print(f"wrote {DOC.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

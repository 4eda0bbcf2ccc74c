"""What a rate limit costs a worker's drain, now that it turns prefetch off.

    python -m bench.rate_prefetch [--jobs 20000] [--sleep-ms 0] [--runs 3] [--write]

A rate limit records a start when the store hands a job out, so a worker under
one takes no more jobs than it has free threads (chalicelib/worker.py `_depth`):
a job taken ahead and started later would break the rate. This drains the same
jobs (one type, handlers that sleep --sleep-ms) from a fresh SQLite store with one
in-process worker (concurrency 8) three ways, alternated run by run: no policy, a
concurrency limit on another type, and a rate limit on another type (neither
binds: only what they cost). Medians of --runs; ratios against no policy in the
same run. --write replaces the rate-prefetch section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable

from bench.docs_section import markers, write_section
from chalicelib.handlers import Registry
from chalicelib.limits import ClaimPolicy, Limit, Rate
from chalicelib.service import EnqueueRequest, Service
from chalicelib.storage import open_store
from chalicelib.worker import Worker, WorkerConfig

SECTION = "rate-prefetch"
POLICIES: dict[str, ClaimPolicy | None] = {
    "no policy": None,
    "concurrency limit (other type)": ClaimPolicy((Limit("type", "other", concurrency=1),)),
    "rate limit (other type)": ClaimPolicy((Limit("type", "other", rate=Rate(1000, 1.0)),)),
}


def drain_rate(policy: ClaimPolicy | None, jobs: int, sleep_s: float) -> float:
    """Jobs per second one worker drains from a fresh store under `policy`."""
    handler: Callable[[dict[str, object]], None] = (
        (lambda payload: time.sleep(sleep_s)) if sleep_s else (lambda payload: None)
    )
    registry = Registry()
    registry.handler("work")(handler)
    registry.handler("other")(lambda payload: None)
    store = open_store(f"sqlite:///{tempfile.mkdtemp()}/bench.db")
    service = Service(store, registry)
    for _ in range(0, jobs, 500):
        service.enqueue([EnqueueRequest(type="work") for _ in range(500)], "bench")
    worker = Worker(store, registry, WorkerConfig(concurrency=8, policy=policy))
    try:
        start = time.perf_counter()
        done = worker.drain().succeeded
        return done / (time.perf_counter() - start)
    finally:
        worker.close()
        store.close()


def measure(jobs: int, sleep_s: float, runs: int) -> dict[str, float]:
    figures: dict[str, list[float]] = {name: [] for name in POLICIES}
    for _ in range(runs):
        for name, policy in POLICIES.items():
            figures[name].append(drain_rate(policy, jobs, sleep_s))
    return {name: statistics.median(values) for name, values in figures.items()}


def section(results: list[tuple[float, dict[str, float]]], command: str) -> str:
    start, end = markers(SECTION)
    rows = []
    for sleep_ms, medians in results:
        base = medians["no policy"]
        rows += [
            f"| {sleep_ms:g} ms | {name} | {rate:,.0f}/s | {rate / base:.2f}x |"
            for name, rate in medians.items()
        ]
    table = "\n".join(rows)
    return f"""{start}
## A rate limit turns prefetch off (bench/rate_prefetch.py)

```sh
{command}
```

{platform.machine()}, Python {platform.python_version()}; 1-minute load average
{os.getloadavg()[0]:.2f} at the end. One worker (concurrency 8) drains one job type
from a fresh SQLite store; the limits are on another type, so they never bind.

| handler time | policy | drain | vs no policy |
|---|---|---:|---:|
{table}

A rate limit records a start when a worker takes the job, so a worker under one
holds no more jobs than free threads: jobs taken ahead started later, beside the
next window's (10 starts in a second under "5/s"). The cost is the prefetch: every
claim is for the threads just freed. What would win it back: claiming the
prefetch with the rate-limited types held (a claim policy that closes them), so
only they lose it; not built yet.
{end}"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=20000)
    parser.add_argument("--sleep-ms", type=float, action="append")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--write", action="store_true")
    args = parser.parse_args()
    logging.disable(logging.CRITICAL)
    results = []
    for sleep_ms in args.sleep_ms or [0.0]:
        jobs = args.jobs if not sleep_ms else max(800, int(args.jobs * 0.2))
        medians = measure(jobs, sleep_ms / 1000, args.runs)
        results.append((sleep_ms, medians))
        for name, rate in medians.items():
            print(f"{sleep_ms:g} ms  {name:32} {rate:9,.0f} jobs/s")
    if args.write:
        sleeps = " ".join(f"--sleep-ms {s:g}" for s in args.sleep_ms or [0.0])
        command = (
            f".venv/bin/python -m bench.rate_prefetch --jobs {args.jobs} {sleeps} "
            f"--runs {args.runs} --write"
        )
        write_section(SECTION, section(results, command))
        print("wrote docs/benchmarks.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

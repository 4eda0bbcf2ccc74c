"""What the order of job ids costs a store's add: random ids against clock-first ids.

    python -m bench.id_order [--prefill 50000] [--batches 200] [--singles 2000]
                             [--rounds 3] [--stores sqlite,postgres] [--write]

Job ids were 128 random bits; they are now a millisecond clock then 80 random bits
(chalicelib/ids.py). Every index on `id` (the primary key, on SQLite and Postgres)
takes a random id on a random leaf page, so a batch of them dirties a page per job;
a clock-first id lands on the last page. Each round opens a fresh store per way,
fills it with --prefill jobs of that way's ids (a store in use is not empty), then
times `store.add` of batches of 100 and of single jobs: the median per job. The
ways alternate within each round; figures are medians of the rounds and the ratio
is random over clock-first in the same round. On SQLite it also counts the WAL
pages one batch of 100 writes. --write replaces the id-order section of
docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import secrets
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from bench.docs_section import markers, write_section
from bench.pg_schema import scratch_schema
from chalicelib.ids import new_job_id
from chalicelib.models import NewJob
from chalicelib.storage import open_store

SECTION = "id-order"
BATCH = 100


def random_id() -> str:
    """The id before the change: 128 random bits."""
    return "j_" + secrets.token_hex(16)


WAYS: dict[str, Callable[[], str]] = {"random ids": random_id, "clock-first ids": new_job_id}


def _jobs(make_id: Callable[[], str], n: int) -> list[NewJob]:
    now = datetime.now(UTC)
    return [
        NewJob(id=make_id(), type="echo", payload={"n": i, "pad": "x" * 40}, run_at=now)
        for i in range(n)
    ]


@contextmanager
def _store_url(kind: str) -> Iterator[str]:
    if kind == "sqlite":
        with tempfile.TemporaryDirectory(prefix="spool-id-order-") as folder:
            yield f"sqlite:///{folder}/spool.db"
        return
    with scratch_schema("bench_ids") as url:
        yield url


def _wal_pages(path: str, store: Any, make_id: Callable[[], str]) -> int:
    reader = sqlite3.connect(path)
    try:
        reader.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        store.add(_jobs(make_id, BATCH))
        return int(reader.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()[1])
    finally:
        reader.close()


def measure_one(
    kind: str, make_id: Callable[[], str], args: argparse.Namespace
) -> dict[str, float]:
    with _store_url(kind) as url:
        store = open_store(url)
        try:
            for start in range(0, args.prefill, 1000):
                store.add(_jobs(make_id, min(1000, args.prefill - start)))
            batches: list[float] = []
            for _ in range(args.batches):
                jobs = _jobs(make_id, BATCH)
                began = time.perf_counter()
                store.add(jobs)
                batches.append((time.perf_counter() - began) / BATCH)
            singles: list[float] = []
            for _ in range(args.singles):
                jobs = _jobs(make_id, 1)
                began = time.perf_counter()
                store.add(jobs)
                singles.append(time.perf_counter() - began)
            out = {
                "batch_us": statistics.median(batches) * 1e6,
                "single_us": statistics.median(singles) * 1e6,
            }
            if kind == "sqlite":
                out["wal_pages"] = float(_wal_pages(url.removeprefix("sqlite:///"), store, make_id))
            return out
        finally:
            store.close()


def measure(args: argparse.Namespace) -> dict[str, dict[str, dict[str, float]]]:
    """{store: {way: {figure: median over rounds}, "ratio": {figure: random / clock}}}"""
    results: dict[str, dict[str, dict[str, float]]] = {}
    for kind in args.stores:
        rounds: dict[str, list[dict[str, float]]] = {way: [] for way in WAYS}
        ratios: list[dict[str, float]] = []
        for number in range(args.rounds):
            ways = list(WAYS.items())
            if number % 2:  # alternate which way goes first
                ways.reverse()
            got = {way: measure_one(kind, make, args) for way, make in ways}
            for way, figures in got.items():
                rounds[way].append(figures)
            ratios.append(
                {
                    key: got["random ids"][key] / got["clock-first ids"][key]
                    for key in got["random ids"]
                }
            )
            print(f"{kind} round {number + 1}/{args.rounds}: {got}", flush=True)
        results[kind] = {
            way: {key: statistics.median(r[key] for r in rs) for key in rs[0]}
            for way, rs in rounds.items()
        }
        results[kind]["ratio"] = {
            key: statistics.median(r[key] for r in ratios) for key in ratios[0]
        }
    return results


def section(results: dict[str, dict[str, dict[str, float]]], args: argparse.Namespace) -> str:
    start, end = markers(SECTION)
    rows = []
    for kind, ways in results.items():
        for way in WAYS:
            f = ways[way]
            pages = f"{f['wal_pages']:.0f}" if "wal_pages" in f else "-"
            rows.append(
                f"| {kind} | {way} | {f['batch_us']:.1f} | {f['single_us']:.1f} | {pages} |"
            )
        r = ways["ratio"]
        pages = f"{r['wal_pages']:.2f}x" if "wal_pages" in r else "-"
        rows.append(
            f"| {kind} | random / clock-first | {r['batch_us']:.2f}x | {r['single_us']:.2f}x"
            f" | {pages} |"
        )
    stores = ",".join(args.stores)
    command = (
        f".venv/bin/python -m bench.id_order --prefill {args.prefill} --batches {args.batches}"
        f" --singles {args.singles} --rounds {args.rounds} --stores {stores} --write"
    )
    return f"""{start}
## Job ids in clock order: what a store's add saves (bench/id_order.py)

```sh
{command}
```

{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, SQLite
{sqlite3.sqlite_version}; 1-minute load average {os.getloadavg()[0]:.2f} at the end. Each
round: a fresh store per way holding {args.prefill:,} jobs of that way's ids, then
{args.batches} batches of {BATCH} and {args.singles:,} single jobs through `store.add`,
timed one call at a time; medians over {args.rounds} rounds, the ways alternating which
goes first. Microseconds per job (lower is better); the ratio row is random over
clock-first in the same round (above 1: clock-first is faster). "WAL pages" is what one
batch of {BATCH} writes to SQLite's write-ahead log.

| store | ids | batch of {BATCH}, us a job | single, us a job | WAL pages a batch |
|---|---|---:|---:|---:|
{chr(10).join(rows)}
{end}"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--prefill", type=int, default=50_000)
    parser.add_argument("--batches", type=int, default=200)
    parser.add_argument("--singles", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--stores", type=lambda s: s.split(","), default=["sqlite", "postgres"])
    parser.add_argument("--write", action="store_true")
    args = parser.parse_args()
    results = measure(args)
    text = section(results, args)
    print(text)
    if args.write:
        write_section(SECTION, text)
        print("wrote docs/benchmarks.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""What fair turns and limits cost, and what fairness buys, on SQLite and Postgres.

    .venv/bin/python -m bench.fair_bench [--stores sqlite,postgres] [--drain 20000]
        [--backlog 50000] [--runs 3] [--base REF] [--claim-sizes 8,16,32] [--write]

In one run, each figure a median of --runs fresh stores (bench/fair_child.py, one
process per measurement):
- drain: --drain no-op jobs drained by one in-process worker (concurrency 8), with
  no policy ("limits off"), a limit that never binds ("limits on"), fair turns on,
  and the same script on REF (default: the commit before limits existed, checked
  out to a temporary worktree) as "before";
- fairness: tenant A has --backlog jobs of 1 ms waiting and a worker is draining
  them; tenant B enqueues 200 jobs, one every 20 ms. B's wait from its enqueue to
  the claim (the store's started_at) and to its handler starting, p50/p99, with fair
  turns, without them, and on an empty queue. The issue's goal: B's p99 to its handler
  starting with A's backlog at most 2x its p99 when the queue is empty.
--write replaces the fairness section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tqdm import tqdm

from bench.docs_section import markers, write_section
from bench.pg_schema import scratch_schema

ROOT = Path(__file__).resolve().parent.parent
SECTION = "fairness"
BASE_REF = "8b97711"  # main just before limits and fair turns


@contextmanager
def fresh_url(store: str) -> Iterator[str]:
    if store == "sqlite":
        with tempfile.TemporaryDirectory() as tmp:
            yield f"sqlite:///{tmp}/spool.db"
        return
    with scratch_schema("spool_fair", migrate=False) as url:  # each tree migrates its own
        yield url


def _migrate(url: str, code: Path) -> None:
    if "postgresql" in url:
        subprocess.run(
            [sys.executable, "-m", "local.cli", "db", "migrate"],
            cwd=code,
            env={**os.environ, "SPOOL_STORE_URL": url, "PYTHONPATH": str(code)},
            check=True,
            capture_output=True,
        )


def child(code: Path, store: str, what: str, mode: str, number: int) -> dict[str, Any]:
    with fresh_url(store) as url:
        _migrate(url, code)
        out = subprocess.run(
            [sys.executable, str(ROOT / "bench" / "fair_child.py"), what, url, mode, str(number)],
            cwd=code,
            env={**os.environ, "PYTHONPATH": str(code), "SPOOL_LOG_LEVEL": "WARNING"},
            check=False,
            capture_output=True,
            text=True,
        )
    if out.returncode != 0:
        raise SystemExit(f"{what} {mode} on {store} failed:\n{out.stderr[-3000:]}")
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


@contextmanager
def worktree(ref: str) -> Iterator[Path]:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "base"
        subprocess.run(
            ["git", "worktree", "add", "--detach", str(path), ref],
            cwd=ROOT, check=True, capture_output=True,
        )  # fmt: skip
        try:
            yield path
        finally:
            subprocess.run(
                ["git", "worktree", "remove", "--force", str(path)], cwd=ROOT, check=False
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stores", default="sqlite,postgres")
    parser.add_argument("--drain", type=int, default=20_000)
    parser.add_argument("--backlog", type=int, default=50_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--base", default=BASE_REF)
    parser.add_argument(
        "--claim-sizes",
        type=lambda text: [int(s) for s in text.split(",") if s],
        default=[],
        help="also measure fair turns with claims of at most these many jobs (e.g. 8,16,32)",
    )
    parser.add_argument("--write", action="store_true")
    args = parser.parse_args()
    stores = args.stores.split(",")
    sizes: list[int] = args.claim_sizes
    load = os.getloadavg()[0]
    results: dict[str, dict[str, Any]] = {}
    with worktree(args.base) as base:
        plan = [
            (store, name, code, what, mode, number)
            for store in stores
            for name, code, what, mode, number in (
                ("before", base, "drain", "off", args.drain),
                ("off", ROOT, "drain", "off", args.drain),
                ("limits", ROOT, "drain", "limits", args.drain),
                ("fair", ROOT, "drain", "fair", args.drain),
                ("empty", ROOT, "latency", "fair", 0),
                ("fair_backlog", ROOT, "latency", "fair", args.backlog),
                ("plain_backlog", ROOT, "latency", "off", args.backlog),
                *(
                    (name, ROOT, what, f"fair@{size}", number)
                    for size in sizes
                    for name, what, number in (
                        (f"fair@{size}", "drain", args.drain),
                        (f"fair_backlog@{size}", "latency", args.backlog),
                    )
                ),
            )
        ]
        bar = tqdm(total=len(plan) * args.runs, desc="fair bench", unit="run")
        # Round robin over the variants, so warm-up and drift fall on all of them alike.
        runs: dict[tuple[str, str], list[dict[str, Any]]] = {}
        for _ in range(args.runs):
            for store, name, code, what, mode, number in plan:
                runs.setdefault((store, name), []).append(child(code, store, what, mode, number))
                bar.update()
        bar.close()
        for (store, name), measured in runs.items():
            results.setdefault(store, {})[name] = {
                key: statistics.median(r[key] for r in measured)
                for key in measured[0]
                if all(key in r for r in measured)  # a stage no job of B passed through
            }
    text = report(results, args, load)
    print(text)
    if args.write:
        write_section(SECTION, text)


# Where B's wait goes (bench/fair_child.py _stages), in the order it is spent.
STAGES = (
    ("add", "its add (B's write, after the worker's write in progress)"),
    ("notice", "add returned -> the worker's claim called"),
    ("claim_wait", "-> the claim holds the writer (started_at)"),
    ("claim_txn", "-> the claim returned"),
    ("dispatch", "-> its handler started (inbox, a pool thread)"),
)


def _stage_table(results: dict[str, dict[str, Any]]) -> list[str]:
    """B's wait by stage, empty queue against A's backlog with fair turns. Each stage's
    quantile is its own: they do not add up to the total's."""
    lines = [
        "",
        "Where B's wait goes, by stage (ms; each stage's own p50 / p99, so they do not "
        "add up to the total's):",
        "",
        "| store | stage | empty queue p50 / p99 | A's backlog, fair turns p50 / p99 |",
        "|---|---|---|---|",
    ]
    for store, r in results.items():
        empty, fair = r["empty"], r["fair_backlog"]
        for stage, what in STAGES:
            keys = (f"stage_{stage}_50", f"stage_{stage}_99")
            if not all(k in empty and k in fair for k in keys):
                continue
            lines.append(
                f"| {store} | {what} | {empty[keys[0]]:.1f} / {empty[keys[1]]:.1f} "
                f"| {fair[keys[0]]:.1f} / {fair[keys[1]]:.1f} |"
            )
    return lines


def _ms(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 else f"{value:.1f}"


def report(results: dict[str, dict[str, Any]], args: argparse.Namespace, load: float) -> str:
    start, end = markers(SECTION)
    lines = [
        start,
        "## Fair turns and limits: what they cost, what they buy",
        "",
        f"`.venv/bin/python -m bench.fair_bench --drain {args.drain} --backlog {args.backlog} "
        f"--runs {args.runs}"
        + (f" --claim-sizes {','.join(map(str, args.claim_sizes))}" if args.claim_sizes else "")
        + f" --write` on {platform.machine()}, {os.cpu_count()} cores, "
        f"1-minute load {load:.2f} before the run and {os.getloadavg()[0]:.2f} after. "
        f"Medians of {args.runs} fresh stores, the variants measured in turn; 'before' is "
        f"the same script on "
        f"`{args.base}` (main before limits existed), measured in the same run.",
        "",
        "| store | drain before | limits off | limits on (not binding) | fair turns on |",
        "|---|---|---|---|---|",
    ]
    for store, r in results.items():
        before = r["before"]["jobs_per_second"]

        def cell(name: str, r: dict[str, Any] = r, before: float = before) -> str:
            value = r[name]["jobs_per_second"]
            return f"{value:,.0f}/s ({value / before:.2f}x)"

        lines.append(
            f"| {store} | {before:,.0f}/s | {cell('off')} | {cell('limits')} | {cell('fair')} |"
        )
    lines += [
        "",
        f"Tenant B's wait (ms from its enqueue) while tenant A's {args.backlog:,} jobs of "
        "1 ms drain: until its own add call returns (measured in B's process), to the claim "
        "(the store's started_at) and to its handler starting (the issue's measure; it adds "
        "the wait in the worker's inbox):",
        "",
        "| store | until | empty queue p50 / p99 | A's backlog, fair turns p50 / p99 "
        "| A's backlog, no fairness p50 / p99 | fair p99 / empty p99 |",
        "|---|---|---|---|---|---|",
    ]
    for store, r in results.items():
        empty, fair, plain = r["empty"], r["fair_backlog"], r["plain_backlog"]
        untils = (("its add returned", "enqueue_"), ("claimed", ""), ("handler started", "start_"))
        for until, p in untils:
            lines.append(
                f"| {store} | {until} | {empty[p + 'p50_ms']:.1f} / {empty[p + 'p99_ms']:.1f} "
                f"| {fair[p + 'p50_ms']:.1f} / {fair[p + 'p99_ms']:.1f} "
                f"| {_ms(plain[p + 'p50_ms'])} / {_ms(plain[p + 'p99_ms'])} "
                f"| {fair[p + 'p99_ms'] / max(empty[p + 'p99_ms'], 1e-9):.2f}x |"
            )
    lines += _stage_table(results)
    if "sqlite" in results:  # one writer: claims and finishes never overlap there
        r = results["sqlite"]
        lines += [
            "",
            f"While B enqueued on SQLite, the worker was inside its store's claim or finish "
            f"(holding SQLite's one writer, or waiting for it) "
            f"{r['fair_backlog']['worker_writing']:.0%} of the time with fair turns "
            f"({r['plain_backlog']['worker_writing']:.0%} without; "
            f"{r['empty']['worker_writing']:.0%} on the empty queue).",
        ]
    sizes: list[int] = args.claim_sizes
    if sizes:
        lines += [
            "",
            "Fair turns with smaller claims (the worker's batch size; 100 above): what the "
            "drain gives up and what B's wait to its handler starting gets back:",
            "",
            "| store | claims of at most | fair drain (x before) "
            "| B's wait p50 / p99 | p99 / empty p99 |",
            "|---|---|---|---|---|",
        ]
        for store, r in results.items():
            before, empty = r["before"]["jobs_per_second"], r["empty"]["start_p99_ms"]
            for size in [100, *sizes]:
                drain = r["fair" if size == 100 else f"fair@{size}"]["jobs_per_second"]
                wait = r["fair_backlog" if size == 100 else f"fair_backlog@{size}"]
                lines.append(
                    f"| {store} | {size} | {drain:,.0f}/s ({drain / before:.2f}x) "
                    f"| {wait['start_p50_ms']:.1f} / {wait['start_p99_ms']:.1f} "
                    f"| {wait['start_p99_ms'] / max(empty, 1e-9):.2f}x |"
                )
    lines += ["", end]
    return "\n".join(lines)


if __name__ == "__main__":
    main()

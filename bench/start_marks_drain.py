"""What the start marks cost a worker on SQLite, old code beside new in one run.

    .venv/bin/python -m bench.start_marks_drain --before DIR [--rounds 3]

DIR is another checkout of Spool (`git worktree add DIR <commit>`). Each round runs,
in fresh child processes and in turn: this tree with start marks off (the floor),
DIR, and this tree. Two scenarios per child:

- drain: DRAIN_N no-op jobs drained at concurrency 8 (`Worker.drain`): jobs/s and
  the process's CPU seconds, and how many `start` writes carried the marks;
- trickle: TRICKLE_N no-op jobs added one at a time to an idle `Worker.run`, each
  waited for before the next: store writes (claim, start, finish calls) per job and
  the pickup p50 (added to handler entered).

The machine is shared: compare the rows of one round, not rates across days.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent.parent
DRAIN_N = 20_000
TRICKLE_N = 300
CONCURRENCY = 8

CHILD = r"""
import json, os, shutil, statistics, sys, tempfile, threading, time
from chalicelib.clock import SystemClock
from chalicelib.handlers import Registry
from chalicelib.service import EnqueueRequest, Service
from chalicelib.storage.sqlite import SQLiteStore
from chalicelib.worker import Worker, WorkerConfig

drain_n, trickle_n, concurrency, marks = (int(a) for a in sys.argv[1:5])
entered = {}
picked = threading.Event()
reg = Registry()

@reg.handler("bench.noop")
def noop(payload: dict) -> None:
    if "i" in payload:
        entered[payload["i"]] = time.perf_counter()
        picked.set()

def counted(store):
    calls = {"claim": 0, "start": 0, "marks": 0, "finish": 0}
    for name in ("claim", "start", "finish"):
        real = getattr(store, name)
        def wrap(*a, _real=real, _name=name, **k):
            calls[_name] += 1
            if _name == "start":
                calls["marks"] += len(a[0])
            return _real(*a, **k)
        setattr(store, name, wrap)
    return calls

root = tempfile.mkdtemp(prefix="spool-marks-")
config = WorkerConfig(concurrency=concurrency, start_marks=bool(marks))
store = SQLiteStore(os.path.join(root, "drain.db"), SystemClock())
service = Service(store, reg)
for first in range(0, drain_n, 500):
    batch = [EnqueueRequest(type="bench.noop", payload={"n": i})
             for i in range(first, min(drain_n, first + 500))]
    service.enqueue(batch, "default")
calls = counted(store)
worker = Worker(store, reg, config)
cpu, wall = time.process_time(), time.perf_counter()
stats = worker.drain()
wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
worker.close()
store.close()
assert stats.succeeded == drain_n, stats
out = {"drain_rate": drain_n / wall, "drain_cpu": cpu, "drain_starts": calls["start"],
       "marks_per_start": calls["marks"] / max(1, calls["start"])}

store = SQLiteStore(os.path.join(root, "trickle.db"), SystemClock())
service = Service(store, reg)
calls = counted(store)
worker = Worker(store, reg, config)
runner = threading.Thread(target=worker.run, daemon=True)
runner.start()
time.sleep(0.2)
waits = []
for i in range(trickle_n):
    picked.clear()
    added = time.perf_counter()
    service.enqueue([EnqueueRequest(type="bench.noop", payload={"i": i})], "default")
    assert picked.wait(10)
    waits.append((entered[i] - added) * 1000)
    time.sleep(0.002)  # its completion written before the next job
worker.stop()
runner.join(10)
store.close()
shutil.rmtree(root, ignore_errors=True)
writes = calls["claim"] + calls["start"] + calls["finish"]
out.update(trickle_writes=writes / trickle_n, trickle_starts=calls["start"] / trickle_n,
           pickup_p50_ms=statistics.median(waits))
print(json.dumps(out))
"""


def run_child(tree: Path, marks: bool) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    args = [str(DRAIN_N), str(TRICKLE_N), str(CONCURRENCY), "1" if marks else "0"]
    done = subprocess.run(
        [sys.executable, "-c", CHILD, *args],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def row(label: str, r: dict[str, Any]) -> str:
    return (
        f"| {label} | {r['drain_rate']:,.0f} | {r['drain_cpu']:.2f} | {r['drain_starts']:,} "
        f"| {r['marks_per_start']:.1f} | {r['trickle_writes']:.2f} | {r['trickle_starts']:.2f} "
        f"| {r['pickup_p50_ms']:.2f} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", type=Path, required=True, help="another Spool checkout")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    print(f"load average {os.getloadavg()[0]:.1f} at the start")
    print(
        "| run | drain jobs/s | drain CPU s | start writes | marks a write "
        "| trickle writes a job | marks a job | pickup p50 ms |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    ratios: list[float] = []
    for _ in range(args.rounds):
        floor = run_child(HERE, marks=False)
        before = run_child(args.before, marks=True)
        after = run_child(HERE, marks=True)
        print(row("marks off (floor)", floor))
        print(row("before", before))
        print(row("after", after))
        ratios.append(after["drain_cpu"] / before["drain_cpu"])
    print(f"load average {os.getloadavg()[0]:.1f} at the end")
    print(f"drain CPU after / before, median of rounds: {statistics.median(ratios):.2f}")


if __name__ == "__main__":
    main()

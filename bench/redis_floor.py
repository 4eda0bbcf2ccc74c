"""The ceiling of an enqueue that waits for Redis's answer, beside Spool and Huey.

    bench/setup_bench_env.sh          # .bench-venv with Huey (pinned)
    .venv/bin/python -m bench.redis_floor [--singles 2000] [--rounds 3] [--write]

Issue 15 asked for single enqueues at twice the best Redis queue's rate. Huey's
enqueue is one LPUSH of a pickled message, one round trip. Any enqueue that is
acknowledged (the caller learns the job is stored) costs at least one round trip,
so the floor here is the fastest such loop: redis-py sending a bare LPUSH of a
small string and reading the reply, with no queue library at all. If that floor
is below twice Huey's rate, no acknowledged enqueue can reach the goal on this
machine, whatever the library does. Same private redis-server (AOF everysec, as
bench/redis_bench.py), the three measured in turn each round, medians.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import time

from bench.docs_section import markers, write_section
from bench.redis_bench import BENCH_PY, MAIN_PY, ROOT, RedisServer

SECTION = "redis-floor"

FLOOR = """
import sys, time, redis
r = redis.Redis.from_url(sys.argv[1])
n = int(sys.argv[2])
r.ping()
t = time.perf_counter()
for i in range(n):
    r.lpush("floor", "x" * 64)
print(n / (time.perf_counter() - t))
"""

HUEY = """
import sys, time
from huey import RedisHuey
huey = RedisHuey("floor", url=sys.argv[1], results=False)
@huey.task()
def noop(i=None):
    return None
n = int(sys.argv[2])
noop()
t = time.perf_counter()
for i in range(n):
    noop()
print(n / (time.perf_counter() - t))
"""

SPOOL = """
import sys, time
from chalicelib.handlers import Registry
from chalicelib.service import EnqueueRequest, Service
from chalicelib.storage import open_store
registry = Registry()
@registry.handler("noop")
def noop(payload):
    return None
store = open_store(sys.argv[1] + "/5?prefix=floor")
service = Service(store, registry)
n = int(sys.argv[2])
service.enqueue([EnqueueRequest(type="noop")], "bench")
t = time.perf_counter()
for i in range(n):
    service.enqueue([EnqueueRequest(type="noop")], "bench")
print(n / (time.perf_counter() - t))
store.close()
"""


def _rate(python: str, code: str, url: str, n: int) -> float:
    out = subprocess.run(
        [python, "-c", code, url, str(n)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), "SPOOL_LOG_LEVEL": "WARNING"},
        capture_output=True,
        text=True,
        check=True,
        timeout=600,
    )
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--singles", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--write", action="store_true")
    args = parser.parse_args()
    if not BENCH_PY.exists():
        raise SystemExit("run bench/setup_bench_env.sh first (Huey lives in .bench-venv)")
    server = RedisServer()
    load = os.getloadavg()[0]
    rates: dict[str, list[float]] = {"floor": [], "huey": [], "spool": []}
    try:
        for _ in range(args.rounds):
            rates["floor"].append(_rate(str(BENCH_PY), FLOOR, server.url, args.singles))
            rates["huey"].append(_rate(str(BENCH_PY), HUEY, server.url, args.singles))
            rates["spool"].append(_rate(str(MAIN_PY), SPOOL, server.url, args.singles))
            time.sleep(0.5)
    finally:
        server.close()
    med = {k: statistics.median(v) for k, v in rates.items()}
    start, end = markers(SECTION)
    text = "\n".join(
        [
            start,
            "### Redis: the ceiling of an acknowledged single enqueue (bench/redis_floor.py)",
            "",
            f"`.venv/bin/python -m bench.redis_floor --singles {args.singles} --rounds "
            f"{args.rounds} --write` on {platform.machine()}, {os.cpu_count()} cores, 1-minute "
            f"load {load:.2f} before and {os.getloadavg()[0]:.2f} after; medians of "
            f"{args.rounds} rounds, the three measured in turn on one private redis-server.",
            "",
            "| enqueue, one call at a time | per second | vs Huey |",
            "|---|---:|---:|",
            f"| redis-py LPUSH alone (no queue: the floor of one round trip) "
            f"| {med['floor']:,.0f} | {med['floor'] / med['huey']:.2f}x |",
            f"| Huey (RedisHuey task call) | {med['huey']:,.0f} | 1.00x |",
            f"| Spool (`Service.enqueue`, Redis store) | {med['spool']:,.0f} "
            f"| {med['spool'] / med['huey']:.2f}x |",
            "",
            "Issue 15's single-enqueue goal is 2x Huey. A caller that waits for the answer "
            "pays one round trip per enqueue, and the bare LPUSH row is that round trip "
            "with nothing else: where it is below 2x Huey, no acknowledged enqueue reaches "
            "the goal on this machine.",
            end,
        ]
    )
    print(text)
    if args.write:
        write_section(SECTION, text)


if __name__ == "__main__":
    main()

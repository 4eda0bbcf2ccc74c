"""What the Python client costs over hand-written HTTP, in one run.

    python -m bench.client_bench [--jobs 2000] [--repeats 3] [--write]

One `spool serve --no-worker` on a fresh SQLite file (nothing runs the jobs,
so only the HTTP edge and the store's writes are measured), then, one after
the other, each way of adding --jobs jobs:

- httpx, no key: a bare httpx.Client posting each job, as hand-written code
  did before the client (the baseline of the one-job rows);
- httpx, with a key: the same with an idempotency_key per job: the server's
  share of the client's safety (a keyed insert looks the key up first);
- Client.enqueue: spool_client, one job per request (key, retries, models);
- AsyncClient.enqueue x8: eight requests in flight on one event loop;
- httpx, batches of 100 (keyed), and Client.enqueue_many: the batch path.

Ratios are against rows of this run only (median of --repeats). Also timed:
`import spool_client` in a fresh interpreter, against `import httpx`.
--write replaces the client section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import httpx

from spool_client import AsyncClient, Client, JobSpec
from spool_client.direct import own_transport

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs" / "benchmarks.md"
START, END = "<!-- section:client -->", "<!-- /section:client -->"
KEY = "bench-client-key"


def start_server(folder: Path) -> tuple[subprocess.Popen[str], str]:
    env = {
        **os.environ,
        "SPOOL_STORE_URL": f"sqlite:///{folder}/spool.db",
        "SPOOL_API_KEYS": f"{KEY}=bench",
        "SPOOL_DEMO_HANDLERS": "true",
        "SPOOL_LOG_LEVEL": "WARNING",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "local.cli", "serve", "--port", "0", "--no-worker"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert proc.stdout is not None
    for line in proc.stdout:
        found = re.search(r"serving app\.py on (http://\S+)", line)
        if found:
            return proc, found.group(1)
    raise SystemExit("spool serve did not start")


def raw(url: str, n: int, keyed: bool) -> None:
    with httpx.Client(
        base_url=url, headers={"X-API-Key": KEY}, transport=own_transport(url)
    ) as http:
        for i in range(n):
            body: dict[str, object] = {"type": "echo", "payload": {"i": i}}
            if keyed:
                body["idempotency_key"] = uuid.uuid4().hex
            http.post("/enqueue", json=body).raise_for_status()


def raw_batches(url: str, n: int) -> None:
    with httpx.Client(
        base_url=url, headers={"X-API-Key": KEY}, transport=own_transport(url)
    ) as http:
        for start in range(0, n, 100):
            jobs = [
                {"type": "echo", "payload": {"i": i}, "idempotency_key": uuid.uuid4().hex}
                for i in range(start, min(n, start + 100))
            ]
            http.post("/enqueue", json={"jobs": jobs}).raise_for_status()


def client_one(url: str, n: int) -> None:
    with Client(url, KEY) as spool:
        for i in range(n):
            spool.enqueue("echo", {"i": i})


def client_many(url: str, n: int) -> None:
    with Client(url, KEY) as spool:
        spool.enqueue_many([JobSpec("echo", {"i": i}) for i in range(n)])


def async_eight(url: str, n: int) -> None:
    async def run() -> None:
        async with AsyncClient(url, KEY) as spool:
            gate = asyncio.Semaphore(8)

            async def one(i: int) -> None:
                async with gate:
                    await spool.enqueue("echo", {"i": i})

            await asyncio.gather(*(one(i) for i in range(n)))

    asyncio.run(run())


Row = tuple[str, float, float]  # way, median jobs/s, spread of its runs


def timed(
    ways: list[tuple[str, Callable[[str, int], None]]], url: str, n: int, repeats: int
) -> list[Row]:
    """Median jobs per second of each way. The ways take turns within each repeat,
    so a neighbour's load that comes and goes falls on all of them alike."""
    rates: dict[str, list[float]] = {name: [] for name, _ in ways}
    for _ in range(repeats):
        for name, fn in ways:
            began = time.perf_counter()
            fn(url, n)
            rates[name].append(n / (time.perf_counter() - began))
    return [(name, statistics.median(rates[name]), spread(rates[name])) for name, _ in ways]


def spread(rates: list[float]) -> float:
    """How far apart the runs of one way were: fastest over slowest, minus one."""
    return max(rates) / min(rates) - 1


def import_ms(module: str, repeats: int = 5) -> float:
    times = []
    for _ in range(repeats):
        began = time.perf_counter()
        subprocess.run([sys.executable, "-c", f"import {module}"], cwd=ROOT, check=True)
        times.append((time.perf_counter() - began) * 1000)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--write", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        proc, url = start_server(Path(folder))
        try:
            raw(url, 50, keyed=True)  # warm: the store open, the handlers loaded
            ways: list[tuple[str, Callable[[str, int], None]]] = [
                ("httpx, no key (baseline)", lambda u, n: raw(u, n, False)),
                ("httpx, with a key", lambda u, n: raw(u, n, True)),
                ("Client.enqueue", client_one),
                ("AsyncClient.enqueue x8 in flight", async_eight),
                ("httpx, batches of 100, keyed (batch baseline)", raw_batches),
                ("Client.enqueue_many (batches of 100)", client_many),
            ]
            load_before = os.getloadavg()[0]
            rows = timed(ways, url, args.jobs, args.repeats)
            load = (load_before, os.getloadavg()[0])
        finally:
            proc.terminate()
            proc.wait(15)
    imports = (import_ms("httpx"), import_ms("spool_client"))
    text = report(rows, imports, load, args)
    print(text)
    if args.write:
        write(text)


def report(
    rows: list[Row],
    imports: tuple[float, float],
    load: tuple[float, float],
    args: argparse.Namespace,
) -> str:
    base, batch_base = rows[0][1], rows[4][1]
    lines = [
        f"`python -m bench.client_bench --jobs {args.jobs} --repeats {args.repeats}` on "
        f"{platform.machine()}, {os.cpu_count()} cores shared with other work, Python "
        f"{platform.python_version()}; `spool serve --no-worker` on SQLite, one client "
        f"process on the same machine. Median of {args.repeats} runs of {args.jobs} jobs, "
        f"the ways taking turns; load average {load[0]:.1f} at the start, {load[1]:.1f} "
        "at the end.",
        "",
        "| Way of adding jobs | jobs/s | x baseline | spread of its runs |",
        "| --- | ---: | ---: | ---: |",
    ]
    for index, (name, rate, apart) in enumerate(rows):
        against = batch_base if index >= 4 else base
        lines.append(f"| {name} | {rate:,.0f} | {rate / against:.2f} | {apart:.0%} |")
    noise = max(apart for _, _, apart in rows)
    lines += [
        "",
        "Batch rows are against the keyed httpx batches. Importing in a fresh "
        f"interpreter: `import httpx` {imports[0]:.0f} ms, `import spool_client` "
        f"{imports[1]:.0f} ms (httpx included; nothing of the server).",
        "",
        f"Noise: runs of one way differed by up to {noise:.0%} (fastest over slowest): "
        "read ratios within that as equal. Row 2 against row 1 is what a key costs "
        "(the server looks it up before a keyed insert); row 3 against row 2 is the "
        "client's own work (models, the retry loop). " + eight_in_flight(rows[3][1] / base, noise),
    ]
    return "\n".join(lines)


def eight_in_flight(ratio: float, noise: float) -> str:
    """What eight requests in flight did, said only when it is beyond the noise."""
    if ratio > 1 + noise:
        return "Eight requests in flight helped; batches help far more."
    if ratio < 1 / (1 + noise):
        return (
            "Eight requests in flight were slower than one at a time: SQLite has one "
            "writer, so concurrent inserts wait for its lock; batches are the way to many jobs."
        )
    return "Eight requests in flight made no difference beyond the noise; batches do."


def write(text: str) -> None:
    doc = DOCS.read_text(encoding="utf-8")
    section = f"{START}\n{text}\n{END}"
    if START in doc:
        doc = re.sub(re.escape(START) + ".*?" + re.escape(END), lambda _: section, doc, flags=re.S)
    else:
        doc = doc.rstrip("\n") + (
            "\n\n## Python client over HTTP (bench/client_bench.py)\n\n" + section + "\n"
        )
    DOCS.write_text(doc, encoding="utf-8")


if __name__ == "__main__":
    main()

"""What webhooks cost: the outbox write on the finish path, and delivery throughput.

    .venv/bin/python -m bench.webhook_bench [--stores sqlite,postgres] [--jobs 5000] [--write]

For each store, in one run:
- finish: N jobs claimed and finished in batches of 100 (the worker's batched
  write-back), jobs/s, without a callback URL (the baseline: only the extra
  RETURNING column is paid) and with one (each terminal finish also writes its
  outbox row in the same transaction); the ratio is against that run's baseline.
- delivery: N deliveries POSTed to a receiver on a loopback socket that answers
  204 at once, by a Deliverer with SPOOL_WEBHOOK_CONCURRENCY 4 and 16, deliveries/s
  (claim, read the job, sign, POST through the SSRF guard, record).

--write replaces the webhooks section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import http.server
import json
import platform
import re
import statistics
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

from chalicelib.config import Settings
from chalicelib.ids import new_job_id
from chalicelib.models import Completion, JobState, NewJob
from chalicelib.storage import open_store
from chalicelib.storage.base import JobStore
from chalicelib.webhooks import signing
from chalicelib.webhooks.deliver import Deliverer

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs" / "benchmarks.md"
START, END = "<!-- section:webhooks -->", "<!-- /section:webhooks -->"
TENANT = "bench"
SECRET = signing.new_secret()


@contextmanager
def store_for(kind: str) -> Iterator[JobStore]:
    if kind == "sqlite":
        with tempfile.TemporaryDirectory() as folder:
            store = open_store(f"sqlite:///{folder}/bench.db")
            try:
                yield store
            finally:
                store.close()
        return
    from tests.pg_support import fresh_schema

    with fresh_schema() as url:
        store = open_store(url)
        try:
            yield store
        finally:
            store.close()


def finish_rate(store: JobStore, n: int, url: str | None) -> float:
    now = store.clock.now() - timedelta(seconds=1)
    jobs = [
        NewJob(new_job_id(), "echo", {"i": i}, now, tenant=TENANT, callback_url=url)
        for i in range(n)
    ]
    for start in range(0, n, 500):
        store.add(jobs[start : start + 500])
    elapsed = 0.0
    while True:
        claimed = store.claim(100, 60)
        if not claimed:
            break
        done = [
            Completion(j.id, j.lease_token or "", JobState.SUCCEEDED, result={}) for j in claimed
        ]
        started = time.perf_counter()
        store.finish(done)
        elapsed += time.perf_counter() - started
    return n / elapsed


class _Receiver(http.server.ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # the default 5 drops SYNs under 16 concurrent POSTs


class _Quiet(http.server.BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_response(204)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


def run(kind: str, n: int) -> dict[str, float]:
    server = _Receiver(("127.0.0.1", 0), _Quiet)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    try:
        out: dict[str, float] = {}
        with store_for(kind) as store:
            finish_rate(store, 500, None)  # warm up
            plain: list[float] = []
            hooked: list[float] = []
            for _ in range(5):  # interleaved, so a table that grows slows both alike
                plain.append(finish_rate(store, n, None))
                hooked.append(finish_rate(store, n, url))
            out["finish_plain"] = statistics.median(plain)
            out["finish_hook"] = statistics.median(hooked)
            # 3n outbox rows now: n delivered 4 at once, then n 16 at once.
            out["deliver_4"] = _deliver_some(store, url, 4, n)
            out["deliver_16"] = _deliver_some(store, url, 16, n)
        return out
    finally:
        server.shutdown()
        server.server_close()


def _deliver_some(store: JobStore, url: str, concurrency: int, count: int) -> float:
    settings = Settings(
        extra={
            "SPOOL_WEBHOOKS": json.dumps({TENANT: {"secrets": [SECRET]}}),
            "SPOOL_WEBHOOK_ALLOW_PRIVATE": "true",
            "SPOOL_WEBHOOK_CONCURRENCY": str(concurrency),
        }
    )
    deliverer = Deliverer(store, settings)
    made = 0
    started = time.perf_counter()
    while made < count:
        claimed = store.claim_webhooks(min(concurrency, count - made), 60)
        if not claimed:
            break
        list(deliverer._pool.map(deliverer.deliver, claimed))
        made += len(claimed)
    elapsed = time.perf_counter() - started
    deliverer.close()
    return made / elapsed


def table(results: dict[str, dict[str, float]], n: int) -> str:
    lines = [
        START,
        "## Webhooks: the outbox on the finish path, and delivery (bench/webhook_bench.py)",
        "",
        f"`.venv/bin/python -m bench.webhook_bench --jobs {n}` on {platform.machine()}, "
        f"Python {platform.python_version()}, a 2-core machine shared with other work; "
        "SQLite file with synchronous=normal, Postgres 15 on the same host. Finish: batches "
        "of 100 completions, median of 5 interleaved runs each; the ratio is against the same "
        "run's jobs without a callback URL. "
        "Delivery: claim, read the job, sign, POST to a loopback receiver answering 204.",
        "",
        "| store | finish, no callback (jobs/s) | finish, with callback (jobs/s) | ratio "
        "| delivery, 4 at once (/s) | delivery, 16 at once (/s) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for kind, r in results.items():
        lines.append(
            f"| {kind} | {r['finish_plain']:,.0f} | {r['finish_hook']:,.0f} | "
            f"{r['finish_hook'] / r['finish_plain']:.2f} | {r['deliver_4']:,.0f} | "
            f"{r['deliver_16']:,.0f} |"
        )
    lines += ["", END]
    return "\n".join(lines)


def write(text: str) -> None:
    doc = DOCS.read_text(encoding="utf-8")
    if START in doc:
        doc = re.sub(re.escape(START) + ".*?" + re.escape(END), lambda _: text, doc, flags=re.S)
    else:
        doc = doc.rstrip("\n") + "\n\n" + text + "\n"
    DOCS.write_text(doc, encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.webhook_bench")
    parser.add_argument("--stores", default="sqlite,postgres")
    parser.add_argument("--jobs", type=int, default=5000)
    parser.add_argument("--write", action="store_true")
    args = parser.parse_args()
    results = {kind: run(kind, args.jobs) for kind in args.stores.split(",")}
    text = table(results, args.jobs)
    print(text)
    if args.write:
        write(text)


if __name__ == "__main__":
    main()

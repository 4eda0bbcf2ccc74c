"""Spool on Redis beside RQ, Huey (RedisHuey) and Celery on Redis (run by hand).

    bench/setup_bench_env.sh                    # once: .bench-venv with RQ, Huey, Celery
    .venv/bin/python -m bench.redis_bench       # all systems, prints a table
    .venv/bin/python -m bench.redis_bench --write-docs   # also fills docs/benchmarks.md

Every system runs in the same run against one private redis-server that this
script starts (a free loopback port, a temporary directory, AOF with
appendfsync everysec: the common production setting), each system in its own
database number, flushed between phases. The shared server on 6379 is never
touched.

- enqueue single: N jobs, one call each, from one process (the API's shape);
- enqueue batch: 20,000 jobs, in batches of 1,000 where the system has a batch
  call (Spool's add, RQ's enqueue_many); Huey and Celery have none, so theirs is
  a loop over one connection;
- drain: 20,000 due no-op jobs, one worker process with 8 threads (RQ: one
  SimpleWorker, which runs one job at a time); the clock stops when the last
  job is done;
- 10 ms jobs at concurrency 8: 2,000 jobs that sleep 10 ms (the ceiling is
  800 jobs/s); RQ runs 8 SimpleWorker processes, the others 8 threads;
- pickup latency: one idle worker; a job every 20 ms; from just before the
  enqueue call to the handler's first line.

Workers run as separate processes (`--role ...`), the competitors under
.bench-venv's Python. Each worker process counts the jobs it ran and prints the
total every 10 ms, so "done" is measured the same way for every system and costs
none of them a Redis command. Only stdlib is imported at module level, so the
roles run in either venv.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BENCH_PY = ROOT / ".bench-venv" / "bin" / "python"
MAIN_PY = Path(sys.executable)
SYSTEMS = ("spool", "rq", "huey", "celery")
DB = {"spool": 0, "rq": 1, "huey": 2, "celery": 3}
THREADS = 8
SLEEP = 0.01

# == roles: what runs inside each worker / client process =======================

_done = 0
_done_lock = threading.Lock()
_stamping = False


def _emit(kind: str, *values: object) -> None:
    print(kind, *values, flush=True)


def _ran(i: Any = None, sleep: bool = False) -> None:
    """Every handler of every system calls this: count it, stamp it."""
    global _done
    if _stamping and i is not None:
        _emit("stamp", i, time.time())
    if sleep:
        time.sleep(SLEEP)
    with _done_lock:
        _done += 1


def _reporter() -> None:
    def loop() -> None:
        last = -1
        while True:
            time.sleep(0.01)
            if _done != last:
                last = _done
                _emit("done", last)

    threading.Thread(target=loop, daemon=True).start()


def _wait_for_go() -> None:
    _emit("ready")
    if sys.stdin.readline().strip() != "go":
        sys.exit(0)
    _reporter()


def _url(system: str) -> str:
    return f"{os.environ['BENCH_REDIS_URL']}/{DB[system]}"


# -- Spool --


def _spool_registry() -> Any:
    from chalicelib.handlers import Registry

    registry = Registry()

    @registry.handler("noop", max_attempts=3)
    def noop(payload: dict[str, Any]) -> None:
        _ran(payload.get("i"))

    @registry.handler("sleep", max_attempts=3)
    def sleep(payload: dict[str, Any]) -> None:
        _ran(payload.get("i"), sleep=True)

    return registry


def _spool_store() -> Any:
    from chalicelib.storage import open_store

    return open_store(_url("spool") + "?prefix=bench&pool_max=20")


def role_spool_worker(threads: int) -> None:
    from chalicelib.worker import Worker, WorkerConfig

    store = _spool_store()
    worker = Worker(store, _spool_registry(), WorkerConfig(concurrency=threads, batch_size=100))
    signal.signal(signal.SIGTERM, lambda *_: worker.stop())
    _wait_for_go()
    worker.run()
    store.close()


def role_spool_client(action: str, kind: str, n: int) -> None:
    from chalicelib.service import EnqueueRequest, Service

    store = _spool_store()
    service = Service(store, _spool_registry())
    seconds = 0.0
    if action == "single":
        seconds = _timed(
            lambda: [service.enqueue([EnqueueRequest(type=kind)], "bench") for _ in range(n)]
        )
    elif action == "batch":

        def batches() -> None:
            for start in range(0, n, 1000):
                count = min(1000, n - start)
                service.enqueue([EnqueueRequest(type=kind) for _ in range(count)], "bench")

        seconds = _timed(batches)
    else:
        _pickup_loop(
            n, lambda i: service.enqueue([EnqueueRequest(type=kind, payload={"i": i})], "bench")
        )
    _emit("seconds", seconds)
    store.close()


# -- RQ --


def rq_noop(i: Any = None) -> None:
    _ran(i)


def rq_sleep(i: Any = None) -> None:
    _ran(i, sleep=True)


def _rq_queue() -> Any:
    from redis import Redis
    from rq import Queue

    return Queue("bench", connection=Redis.from_url(_url("rq")))


def role_rq_worker(threads: int) -> None:
    from rq import SimpleWorker

    queue = _rq_queue()
    worker = SimpleWorker([queue], connection=queue.connection)
    _wait_for_go()
    worker.work(with_scheduler=False, logging_level="WARNING")


def role_rq_client(action: str, kind: str, n: int) -> None:
    from rq import Queue

    queue = _rq_queue()
    fn = rq_sleep if kind == "sleep" else rq_noop
    seconds = 0.0
    if action == "single":
        seconds = _timed(lambda: [queue.enqueue(fn) for _ in range(n)])
    elif action == "batch":

        def batches() -> None:
            for start in range(0, n, 1000):
                count = min(1000, n - start)
                queue.enqueue_many([Queue.prepare_data(fn) for _ in range(count)])

        seconds = _timed(batches)
    else:
        _pickup_loop(n, lambda i: queue.enqueue(fn, i))
    _emit("seconds", seconds)


# -- Huey --

_huey_tasks: dict[str, Any] = {}


def _huey(threads: int = THREADS) -> Any:
    from huey import RedisHuey

    if not _huey_tasks:
        huey = RedisHuey("bench", url=_url("huey"), results=False)

        @huey.task(name="noop")
        def noop(i: Any = None) -> None:
            _ran(i)

        @huey.task(name="sleep")
        def sleep(i: Any = None) -> None:
            _ran(i, sleep=True)

        _huey_tasks.update(huey=huey, noop=noop, sleep=sleep)
    return _huey_tasks["huey"]


def role_huey_worker(threads: int) -> None:
    import logging

    logging.getLogger("huey").setLevel(logging.WARNING)
    huey = _huey()
    consumer = huey.create_consumer(
        workers=threads, worker_type="thread", periodic=False, initial_delay=0.001,
        max_delay=0.1,
    )  # fmt: skip
    _wait_for_go()
    consumer.run()


def role_huey_client(action: str, kind: str, n: int) -> None:
    _huey()
    task = _huey_tasks[kind]
    seconds = 0.0
    if action in ("single", "batch"):  # Huey has no batch enqueue
        seconds = _timed(lambda: [task() for _ in range(n)])
    else:
        _pickup_loop(n, lambda i: task(i))
    _emit("seconds", seconds)


# -- Celery --


def _celery() -> Any:
    from celery import Celery

    app = Celery("bench", broker=_url("celery"))
    app.conf.update(
        worker_hijack_root_logger=False,
        worker_redirect_stdouts=False,  # our counts go to stdout, not to its logger
        broker_connection_retry_on_startup=True,
    )

    @app.task(name="noop")
    def noop(i: Any = None) -> None:
        _ran(i)

    @app.task(name="sleep")
    def sleep(i: Any = None) -> None:
        _ran(i, sleep=True)

    return app


def role_celery_worker(threads: int) -> None:
    app = _celery()
    _wait_for_go()
    app.worker_main(
        argv=[
            "worker", "--pool=threads", f"--concurrency={threads}", "--loglevel=WARNING",
            "--without-gossip", "--without-mingle", "--without-heartbeat",
        ]
    )  # fmt: skip


def role_celery_client(action: str, kind: str, n: int) -> None:
    app = _celery()
    task = app.tasks[kind]
    seconds = 0.0
    with app.producer_or_acquire() as producer:  # one connection for every send
        if action in ("single", "batch"):  # Celery has no batch enqueue
            seconds = _timed(lambda: [task.apply_async(producer=producer) for _ in range(n)])
        else:
            _pickup_loop(n, lambda i: task.apply_async((i,), producer=producer))
    _emit("seconds", seconds)


def _timed(fn: Callable[[], object]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def _pickup_loop(n: int, send: Callable[[int], object]) -> None:
    sent = {}
    for i in range(n):
        sent[i] = time.time()
        send(i)
        time.sleep(0.02)
    _emit("sent", json.dumps(sent))


WORKERS: dict[str, Callable[[int], None]] = {
    "spool": role_spool_worker,
    "rq": role_rq_worker,
    "huey": role_huey_worker,
    "celery": role_celery_worker,
}
CLIENTS: dict[str, Callable[[str, str, int], None]] = {
    "spool": role_spool_client,
    "rq": role_rq_client,
    "huey": role_huey_client,
    "celery": role_celery_client,
}

# == the orchestrator ============================================================


@dataclass
class Result:
    system: str
    single_per_s: float = 0.0
    batch_per_s: float = 0.0
    drain_per_s: float = 0.0
    sleep_per_s: float = 0.0
    pickup_p50_ms: float = 0.0
    pickup_p99_ms: float = 0.0


class RedisServer:
    """A private redis-server: its own port and directory, removed afterwards."""

    def __init__(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise SystemExit("redis-server is not installed (Debian package redis-server)")
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.dir = tempfile.mkdtemp(prefix="spool-redis-bench-")
        self.proc = subprocess.Popen(
            [
                binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", self.dir,
                "--save", "", "--appendonly", "yes", "--appendfsync", "everysec",
                "--logfile", os.path.join(self.dir, "redis.log"),
            ],
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
        self.url = f"redis://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 20
        while not self._ping():
            if time.monotonic() > deadline:
                raise SystemExit("the private redis-server did not start")
            time.sleep(0.05)

    def _ping(self) -> bool:
        try:
            self.flush(None)
            return True
        except OSError:
            return False

    def flush(self, db: int | None) -> None:
        """FLUSHDB on one database of this private server (PING when db is None)."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as conn:
            command = b"PING\r\n" if db is None else f"SELECT {db}\r\nFLUSHDB\r\n".encode()
            conn.sendall(command)
            expected = 1 if db is None else 2
            data = b""
            while data.count(b"\r\n") < expected:
                chunk = conn.recv(1024)
                if not chunk:
                    raise OSError("connection closed")
                data += chunk
            if b"-" in data[:1]:
                raise OSError(data.decode())

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)
        shutil.rmtree(self.dir, ignore_errors=True)


def _python_for(system: str) -> Path:
    return MAIN_PY if system == "spool" else BENCH_PY


def _role_cmd(system: str, *args: str) -> list[str]:
    return [str(_python_for(system)), "-m", "bench.redis_bench", "--role", system, *args]


def _env(server: RedisServer) -> dict[str, str]:
    return {**os.environ, "BENCH_REDIS_URL": server.url, "PYTHONPATH": str(ROOT)}


def _client(server: RedisServer, system: str, action: str, kind: str, n: int) -> dict[str, str]:
    out = subprocess.run(
        _role_cmd(system, "client", action, kind, str(n)),
        cwd=ROOT,
        env=_env(server),
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    if out.returncode != 0:
        raise RuntimeError(f"{system} {action} failed:\n{out.stderr[-3000:]}")
    found: dict[str, str] = {}
    for line in out.stdout.splitlines():
        key, _, rest = line.partition(" ")
        found[key] = rest
    return found


class Workers:
    """Worker processes of one system; sums the totals they print."""

    def __init__(
        self, server: RedisServer, system: str, processes: int, threads: int, stamp: bool = False
    ) -> None:
        args = ["worker", str(threads)] + (["stamp"] if stamp else [])
        self.procs = [
            subprocess.Popen(
                _role_cmd(system, *args),
                cwd=ROOT,
                env=_env(server),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                text=True,
                bufsize=1,
            )
            for _ in range(processes)
        ]
        self.done = [0] * processes
        self.stamps: dict[int, float] = {}
        for p in self.procs:
            assert p.stdout is not None
            line = p.stdout.readline().strip()
            if line != "ready":
                self.stop()
                raise RuntimeError(f"{system} worker did not start (said {line!r})")
        for k in range(processes):
            threading.Thread(target=self._read, args=(k,), daemon=True).start()

    def _read(self, k: int) -> None:
        stdout = self.procs[k].stdout
        assert stdout is not None
        for line in stdout:
            parts = line.split()
            if len(parts) == 2 and parts[0] == "done":
                self.done[k] = int(parts[1])
            elif len(parts) == 3 and parts[0] == "stamp":
                self.stamps[int(parts[1])] = float(parts[2])

    def go(self) -> float:
        for p in self.procs:
            assert p.stdin is not None
            p.stdin.write("go\n")
            p.stdin.flush()
        return time.perf_counter()

    def wait_done(self, n: int, limit: float = 600) -> float:
        deadline = time.perf_counter() + limit
        while sum(self.done) < n:
            if time.perf_counter() > deadline:
                raise RuntimeError(f"only {sum(self.done)} of {n} jobs done in {limit} s")
            time.sleep(0.002)
        return time.perf_counter()

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 15
        for p in self.procs:
            try:
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def _drain(server: RedisServer, system: str, kind: str, n: int, processes: int) -> float:
    server.flush(DB[system])
    _client(server, system, "batch", kind, n)
    workers = Workers(server, system, processes, 1 if processes > 1 else THREADS)
    try:
        started = workers.go()
        return n / (workers.wait_done(n) - started)
    finally:
        workers.stop()
        server.flush(DB[system])


def _pickup(server: RedisServer, system: str, n: int = 200) -> tuple[float, float]:
    server.flush(DB[system])
    workers = Workers(server, system, 1, 1, stamp=True)
    try:
        workers.go()
        time.sleep(1.0)  # let it subscribe and go idle
        sent = json.loads(_client(server, system, "pickup", "noop", n)["sent"])
        deadline = time.monotonic() + 30
        while len(workers.stamps) < n and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        workers.stop()
    waits = sorted(
        (workers.stamps[int(i)] - t) * 1000 for i, t in sent.items() if int(i) in workers.stamps
    )
    if len(waits) < n:
        raise RuntimeError(f"{system}: only {len(waits)} of {n} pickups seen")
    return statistics.median(waits), waits[min(len(waits) - 1, int(len(waits) * 0.99))]


def bench_system(
    server: RedisServer, system: str, jobs: int, singles: int, sleepers: int, bar: Any
) -> Result:
    result = Result(system)
    server.flush(DB[system])
    result.single_per_s = singles / float(
        _client(server, system, "single", "noop", singles)["seconds"]
    )
    server.flush(DB[system])
    bar.update()
    result.batch_per_s = jobs / float(_client(server, system, "batch", "noop", jobs)["seconds"])
    server.flush(DB[system])
    bar.update()
    result.drain_per_s = _drain(server, system, "noop", jobs, 1)
    bar.update()
    processes = THREADS if system == "rq" else 1  # RQ's SimpleWorker runs one job at a time
    result.sleep_per_s = _drain(server, system, "sleep", sleepers, processes)
    bar.update()
    result.pickup_p50_ms, result.pickup_p99_ms = _pickup(server, system)
    bar.update()
    return result


def _versions() -> str:
    out = subprocess.run(
        [
            str(BENCH_PY), "-c",
            "from importlib.metadata import version as v;"
            "print(', '.join(f'{n} {v(n)}' for n in ('rq', 'huey', 'celery', 'redis')))",
        ],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    return out.stdout.strip() or "unknown"


def render(results: list[Result], jobs: int, singles: int, sleepers: int, command: str) -> str:
    def f(x: float) -> str:
        return f"{x:,.0f}"

    server = subprocess.run(["redis-server", "--version"], capture_output=True, text=True).stdout
    lines = [
        "## Redis",
        "",
        f"One private redis-server ({server.split()[2].removeprefix('v=') if server else '?'}, "
        "AOF appendfsync "
        "everysec, a database per system), 2 cores shared by the server, the workers and the "
        f"client. Drain: {jobs:,} due no-op jobs, one worker process with {THREADS} threads "
        f"(RQ: one SimpleWorker). 10 ms jobs: {sleepers:,} jobs that sleep 10 ms, concurrency "
        f"{THREADS} ({THREADS} threads; RQ: {THREADS} SimpleWorker processes; the ceiling is "
        f"{THREADS / SLEEP:,.0f} jobs/s). Enqueue single: {singles:,} one-job calls; batch: "
        f"{jobs:,} jobs in batches of 1,000 (Spool, RQ) or one by one over one connection "
        "(Huey, Celery: no batch call). Pickup: one idle worker, a job every 20 ms, from just "
        "before the enqueue call to the handler's first line.",
        "",
        "| system | drain (jobs/s) | 10 ms jobs, concurrency 8 (jobs/s) "
        "| enqueue single (jobs/s) | enqueue batch (jobs/s) | pickup p50 / p99 (ms) |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in results:
        lines.append(
            f"| {r.system} | {f(r.drain_per_s)} | {f(r.sleep_per_s)} | {f(r.single_per_s)} "
            f"| {f(r.batch_per_s)} | {r.pickup_p50_ms:.1f} / {r.pickup_p99_ms:.1f} |"
        )
    spool = next((r for r in results if r.system == "spool"), None)
    others = [r for r in results if r.system != "spool"]
    if spool and others:

        def ratio(attr: str) -> str:
            best = max(others, key=lambda r: getattr(r, attr))
            mine, theirs = getattr(spool, attr), getattr(best, attr)
            return f"x{mine / theirs:.2f} (best: {best.system})" if theirs else "n/a"

        lines += [
            "",
            "Spool against the best of the others, same run: drain "
            + ratio("drain_per_s")
            + "; 10 ms jobs "
            + ratio("sleep_per_s")
            + "; enqueue single "
            + ratio("single_per_s")
            + "; enqueue batch "
            + ratio("batch_per_s")
            + f"; pickup p50 {spool.pickup_p50_ms:.1f} ms (target <= 2 ms).",
        ]
    lines += [
        "",
        f"Versions: {_versions()}. Settings: each system's defaults otherwise. Spool: "
        f"`spool worker`'s engine, concurrency {THREADS}, claims of up to 100, completions "
        "written in batches. RQ: SimpleWorker (no fork per job; the default Worker forks and "
        "is far slower), results kept for its default 500 s. Huey: RedisHuey, thread "
        f"workers, results off (the tasks return nothing). Celery: threads pool, "
        "prefetch multiplier 4 (default), no result backend, gossip/mingle/heartbeat off. "
        "Every worker process counts the jobs it ran and prints the total every 10 ms. "
        "The machine is shared with other work, so figures move between runs; compare rows "
        "of the same run only.",
        "",
        "```sh",
        "bench/setup_bench_env.sh        # .bench-venv: RQ, Huey, Celery (pinned)",
        command,
        "```",
    ]
    return "\n".join(lines)


def write_docs(text: str) -> None:
    path = ROOT / "docs" / "benchmarks.md"
    doc = path.read_text(encoding="utf-8")
    start, end = "<!-- section:redis -->", "<!-- /section:redis -->"
    if start in doc:
        head, rest = doc.split(start, 1)
        _, tail = rest.split(end, 1)
        doc = f"{head}{start}\n{text}\n{end}{tail}"
    else:
        doc = doc.rstrip("\n") + f"\n\n{start}\n{text}\n{end}\n"
    path.write_text(doc, encoding="utf-8")


def run_role(argv: list[str]) -> None:
    global _stamping
    system, kind = argv[0], argv[1]
    if kind == "worker":
        _stamping = "stamp" in argv[3:]
        WORKERS[system](int(argv[2]))
    else:
        CLIENTS[system](argv[2], argv[3], int(argv[4]))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--role"]:
        # Run the role from the module imported by name, not from __main__: RQ refuses
        # __main__'s functions, and its worker imports bench.redis_bench to run them,
        # so the counters must live there.
        from bench import redis_bench

        redis_bench.run_role(argv[1:])
        return 0
    parser = argparse.ArgumentParser(prog="python -m bench.redis_bench")
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--singles", type=int, default=2_000)
    parser.add_argument("--sleepers", type=int, default=2_000)
    parser.add_argument("--systems", default=",".join(SYSTEMS))
    parser.add_argument("--write-docs", action="store_true")
    args = parser.parse_args(argv)
    systems = [s for s in args.systems.split(",") if s]
    if any(_python_for(s) == BENCH_PY for s in systems) and not BENCH_PY.exists():
        print("run bench/setup_bench_env.sh first (or pass --systems spool)", file=sys.stderr)
        return 2
    from tqdm import tqdm

    server = RedisServer()
    results = []
    try:
        with tqdm(total=len(systems) * 5, unit="step") as bar:
            for system in systems:
                bar.set_description(system)
                results.append(
                    bench_system(server, system, args.jobs, args.singles, args.sleepers, bar)
                )
    finally:
        server.close()
    command = ".venv/bin/python -m bench.redis_bench " + " ".join(argv)
    text = render(results, args.jobs, args.singles, args.sleepers, command.strip())
    print(text)
    if args.write_docs:
        write_docs(text)
        print("wrote docs/benchmarks.md (section redis)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

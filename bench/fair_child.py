"""One measurement of bench/fair_bench.py, in a process of its own.

Run with the code under test first on sys.path (PYTHONPATH), so the same script
measures this checkout and the commit before limits existed. It uses only the
store and worker API both have; a policy is passed only when one is asked for.

    python bench/fair_child.py drain STORE_URL MODE N
    python bench/fair_child.py latency STORE_URL MODE BACKLOG
    python bench/fair_child.py enqueue STORE_URL MODE N    (tenant B, run by latency)
MODE: off, limits or fair; MODE@N claims at most N jobs at a time (default 100).
Prints one JSON value.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from typing import Any

from chalicelib.handlers import Registry
from chalicelib.ids import new_job_id
from chalicelib.models import JobState, NewJob
from chalicelib.storage import open_store
from chalicelib.worker import Worker, WorkerConfig

B_JOBS = 200
B_EVERY = 0.02  # seconds between tenant B's enqueues
WORK = 0.001  # seconds each backlog job takes


def _registry() -> Registry:
    registry = Registry()

    @registry.handler("noop")
    def noop(payload: dict[str, Any]) -> None:
        if payload.get("work"):
            time.sleep(float(payload["work"]))

    @registry.handler("other")
    def other(payload: dict[str, Any]) -> None: ...

    @registry.handler("mark")
    def mark(payload: dict[str, Any]) -> dict[str, float]:
        return {"t": time.time()}  # when the handler started, by the wall clock

    return registry


def _config(mode: str) -> WorkerConfig:
    """MODE, or MODE@N: claims of at most N jobs (default 100)."""
    mode, _, size = mode.partition("@")
    batch = int(size or 100)
    if mode == "off":
        return WorkerConfig(concurrency=8, batch_size=batch)
    from chalicelib.limits import ClaimPolicy, Limit

    if mode == "limits":  # a limit that never binds: the cost of checking one
        policy = ClaimPolicy((Limit("type", "other", concurrency=1),))
    elif mode == "fair":
        policy = ClaimPolicy(fair=True)
    else:
        raise SystemExit(f"unknown mode {mode}")
    return WorkerConfig(concurrency=8, batch_size=batch, policy=policy)


def _jobs(n: int, tenant: str, work: float = 0.0, type_: str = "noop") -> list[NewJob]:
    now = datetime.now(UTC)
    payload = {"work": work} if work else {}
    return [
        NewJob(id=new_job_id(), type=type_, payload=payload, run_at=now, tenant=tenant)
        for _ in range(n)
    ]


def drain(url: str, mode: str, n: int) -> dict[str, Any]:
    store = open_store(url)
    for start in range(0, n, 1000):
        store.add(_jobs(min(1000, n - start), "a"))
    worker = Worker(store, _registry(), _config(mode))
    began = time.perf_counter()
    stats = worker.drain()
    # Code before 33b9310 could end a drain early on Postgres (a step that skipped its
    # claim looked idle): drain again, the clock running, so "before" is timed whole.
    for _ in range(100):
        if stats.succeeded >= n:
            break
        stats = worker.drain()
    seconds = time.perf_counter() - began
    worker.close()
    if stats.succeeded != n:  # say what the store holds, to tell a lost add from a short drain
        left = {f"{q}/{state.value}": k for (q, state), k in store.counts().items()}
        raise SystemExit(f"drained {stats} of {n}; the store holds {left}")
    store.close()
    return {"jobs_per_second": n / seconds}


def latency(url: str, mode: str, backlog: int) -> dict[str, Any]:
    store = open_store(url)
    for start in range(0, backlog, 1000):
        store.add(_jobs(min(1000, backlog - start), "a", WORK))
    worker = Worker(store, _registry(), _config(mode))
    busy = _time_writes(store)
    claims = _time_claims(store)
    wakes = _time_wakes(store, worker)
    runner = threading.Thread(target=worker.run, daemon=True)
    began = time.perf_counter()
    runner.start()
    # Tenant B enqueues from a process of its own, as an API server would: in this
    # one, its thread would queue for the GIL behind the worker's ten threads.
    out = subprocess.run(
        [sys.executable, __file__, "enqueue", url, mode, str(B_JOBS)],
        check=True,
        capture_output=True,
        text=True,
    )
    b = json.loads(out.stdout.strip().splitlines()[-1])
    ids, enqueue_ms = b["ids"], sorted(b["enqueue_ms"])
    took = dict(zip(ids, b.get("took_ms", []), strict=False))
    writing = sum(busy) / (time.perf_counter() - began)  # while B enqueued
    deadline = time.monotonic() + 600
    claimed: list[float] = []
    started: list[float] = []
    stages: dict[str, list[float]] = {}
    while time.monotonic() < deadline:
        jobs = [store.get(i) for i in ids]
        if all(j is not None and j.state is JobState.SUCCEEDED for j in jobs):
            for j in jobs:
                assert j is not None and j.started_at is not None and j.result is not None
                claimed.append((j.started_at - j.created_at).total_seconds() * 1000)
                handler_t = float(j.result["t"])  # type: ignore[arg-type,index,call-overload]
                started.append((handler_t - j.created_at.timestamp()) * 1000)
                _stages(stages, j, took.get(j.id), claims, wakes)
            break
        time.sleep(0.05)
    left = sum(n for (_, state), n in store.counts().items() if state is JobState.QUEUED)
    # A's drain while B enqueued and waited: what B's turns cost the backlog.
    drained_per_second = (backlog - left) / (time.perf_counter() - began)
    worker.stop()
    runner.join(60)
    store.close()
    claimed.sort()
    started.sort()
    return {
        "p50_ms": statistics.median(claimed),
        "p99_ms": claimed[int(0.99 * (len(claimed) - 1))],
        "start_p50_ms": statistics.median(started),
        "start_p99_ms": started[int(0.99 * (len(started) - 1))],
        "backlog_left": left,
        "backlog_drained_per_second": drained_per_second,
        "enqueue_p50_ms": statistics.median(enqueue_ms),
        "enqueue_p99_ms": enqueue_ms[int(0.99 * (len(enqueue_ms) - 1))],
        "worker_writing": writing,
        **{
            f"stage_{name}_{q}": _quantile(values, q)
            for name, values in stages.items()
            for q in (50, 90, 99)
            if values
        },
    }


def _quantile(values: list[float], q: int) -> float:
    ordered = sorted(values)
    return ordered[int(q / 100 * (len(ordered) - 1))]


def _time_claims(store: Any) -> list[tuple[float, float, set[str]]]:
    """Each claim the worker made: when it was called and returned (wall clock), and
    the ids it took, to place each of B's jobs' wait in a stage (_stages)."""
    made: list[tuple[float, float, set[str]]] = []
    call = store.claim

    def timed(*args: Any, **kwargs: Any) -> Any:
        start = time.time()
        jobs = call(*args, **kwargs)
        made.append((start, time.time(), {j.id for j in jobs}))
        return jobs

    store.claim = timed
    return made


def _time_wakes(store: Any, worker: Any) -> dict[str, list[float]]:
    """When the worker's wake-up bridge heard of new work, and when its steps began."""
    seen: dict[str, list[float]] = {"woke": [], "step": []}
    notifier = getattr(store, "notifier", None)
    if notifier is not None:
        wait = notifier.wait

        def timed_wait(timeout: float) -> bool:
            woke = bool(wait(timeout))
            if woke:
                seen["woke"].append(time.time())
            return woke

        notifier.wait = timed_wait
    step = worker._step

    def timed_step(*args: Any, **kwargs: Any) -> Any:
        seen["step"].append(time.time())
        return step(*args, **kwargs)

    worker._step = timed_step
    return seen


def _after(times: list[float], t: float) -> float | None:
    return next((x for x in times if x >= t), None)


def _stages(
    stages: dict[str, list[float]],
    job: Any,
    took_ms: float | None,
    claims: list[tuple[float, float, set[str]]],
    wakes: dict[str, list[float]],
) -> None:
    """Where one of B's jobs waited, in ms: its add (B's write), from the add's return
    to the call of the claim that took it (the worker noticing), that claim's wait for
    the writer (to the store's started_at), the claim's transaction, and from the
    claim's return to its handler starting (the inbox and a pool thread)."""
    created = job.created_at.timestamp()
    found = [(call, back) for call, back, ids in claims if job.id in ids]
    if took_ms is None or not found:
        return
    call, back = found[-1]
    added = created + took_ms / 1000
    claimed = job.started_at.timestamp()
    before = sum(1 for c, _, _ in claims if added <= c < call)
    committed = added - 0.0002  # the add notifies just after its commit
    woke = _after(wakes["woke"], committed)
    if woke is not None and woke <= call:
        stages.setdefault("bridge", []).append((woke - added) * 1000)
        stepped = _after(wakes["step"], woke)
        if stepped is not None and stepped <= call:
            stages.setdefault("to_step", []).append((stepped - woke) * 1000)
            stages.setdefault("step_to_claim", []).append((call - stepped) * 1000)
    for name, ms in (
        ("add", took_ms),
        ("notice", (call - added) * 1000),
        ("claim_wait", (claimed - call) * 1000),
        ("claim_txn", (back - claimed) * 1000),
        ("dispatch", (job.result["t"] - back) * 1000),
        ("claims_between", float(before)),
    ):
        stages.setdefault(name, []).append(ms)


def _time_writes(store: Any) -> list[float]:
    """Seconds the worker spends in the store's claim and finish (its write transactions)."""
    spent: list[float] = []
    for name in ("claim", "finish"):
        call = getattr(store, name)

        def timed(*args: Any, _call: Any = call, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return _call(*args, **kwargs)
            finally:
                spent.append(time.perf_counter() - start)

        setattr(store, name, timed)
    return spent


def enqueue(url: str, mode: str, n: int) -> dict[str, list[Any]]:
    """Tenant B's jobs, one every B_EVERY seconds: their ids, and how long each add took
    (the first, which opens the store's files, left out)."""
    store = open_store(url)
    ids: list[str] = []
    took: list[float] = []
    for _ in range(n):
        start = time.perf_counter()
        ids.extend(r.job.id for r in store.add(_jobs(1, "b", type_="mark")))
        took.append((time.perf_counter() - start) * 1000)
        time.sleep(B_EVERY)
    store.close()
    return {"ids": ids, "enqueue_ms": took[1:], "took_ms": took}


if __name__ == "__main__":
    what, url, mode, number = sys.argv[1:5]
    run = {"drain": drain, "latency": latency, "enqueue": enqueue}[what]
    print(json.dumps(run(url, mode, int(number))))

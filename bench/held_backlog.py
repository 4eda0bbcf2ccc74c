"""SQS receives per job run when a rate limit holds back a backlog, counted under moto.

    .venv/bin/python -m bench.held_backlog [--jobs 1000] [--rate 10/s] [--json]

Jobs of one type under a rate (SPOOL_LIMITS) are enqueued at once, through the
service as the API enqueues them, into DynamoDB and SQS in moto; the local SQS
poller then feeds app.py's SQS handler as Lambda's event source mapping does,
until every job has succeeded. Most of the backlog is held by the rate's claim
and goes back to the queue as delayed messages (chalicelib/events.py,
held_delay), so what this counts is how often each job's message is received,
and so claimed, before it runs.

Time is a test clock (chalicelib/clock.py FakeClock) shared by the store, whose
rate windows it stamps, and by moto's SQS, whose delays and visibility it
decides: each invocation moves it on by a time drawn from `batch_seconds`
(BATCH_SECONDS, seeded: the same run every time), and when the poller finds no
visible message it moves on by `tick` seconds. Nothing sleeps, and the counts do
not depend on the machine. One poller, one invocation at a time: Lambda would run
several at once, which changes when a message is received, not how many times.

What it reports: messages received (each one an SQS receive of a job id and a
claim of it), runs (jobs started), receives per run, and the start rate the
rate admitted: the jobs over the time from the first start to the last, and the
most starts in any window of the rate (never above its count).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from moto import mock_aws

import bench.moto_env  # noqa: F401  (first: moto only, nothing may reach real AWS)

QUEUE = "held"
TICK = 0.1  # seconds of test clock between polls of the queue
# Test-clock seconds one invocation takes (a batch's claims, runs and sends: tens to
# hundreds of milliseconds on AWS), drawn from this range by a seeded generator.
# With none, every held job was sent on the same instants as the first, and SQS's
# whole-second delays brought every job back on one grid of whole seconds: a "10/s"
# window of 1.1 s (limits.Rate.window) then starts at most 10 every 2 s, however
# the delays are chosen. On AWS, invocations end when they end.
BATCH_SECONDS = (0.02, 0.2)
SEED = 52
START = datetime(2030, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class HeldRun:
    jobs: int
    rate: str
    received: int  # messages the poller received (and the handler claimed)
    invocations: int  # handler invocations (batches of up to 10)
    seconds: float  # test-clock seconds from the first start to the last
    busiest: int  # the most starts in any window of the rate
    limit: int  # the rate's count: `busiest` never exceeds it
    starts: tuple[float, ...] = field(default=(), repr=False)  # test-clock seconds

    @property
    def per_run(self) -> float:
        return self.received / self.jobs

    @property
    def start_rate(self) -> float:
        """Starts per second, over the run (the first start to the last)."""
        return (self.jobs - 1) / self.seconds if self.seconds > 0 else float(self.jobs)


@contextmanager
def _moto_sqs_on(clock: Any) -> Iterator[None]:
    """Make moto's SQS tell time by `clock` (its delays, visibility timeouts): its
    messages read the time through these two names of moto.sqs.models."""
    import moto.sqs.models as sqs_models

    names = ("unix_time", "unix_time_millis")
    saved = {name: getattr(sqs_models, name) for name in names}

    def unix_time(dt: datetime | None = None) -> float:
        return float(clock.now().timestamp()) if dt is None else float(saved["unix_time"](dt))

    def unix_time_millis(dt: datetime | None = None) -> float:
        return unix_time(dt) * 1000.0

    setattr(sqs_models, "unix_time", unix_time)  # noqa: B010 - not exported, so not typed
    setattr(sqs_models, "unix_time_millis", unix_time_millis)  # noqa: B010
    try:
        yield
    finally:
        for name, value in saved.items():
            setattr(sqs_models, name, value)


def busiest_window(starts: list[float], window: float) -> int:
    """The most starts in any half-open window of `window` seconds."""
    starts = sorted(starts)
    best, low = 0, 0
    for high, at in enumerate(starts):
        while starts[low] <= at - window:
            low += 1
        best = max(best, high - low + 1)
    return best


def measure(
    jobs: int = 200,
    rate: str = "10/s",
    tick: float = TICK,
    batch_seconds: tuple[float, float] = BATCH_SECONDS,
    seed: int = SEED,
    concurrency: int = 8,
    on_batch: Callable[[int], None] | None = None,
) -> HeldRun:
    """Enqueue `jobs` echo jobs under `rate` at once; poll until all have succeeded."""
    import app as spool_app
    from chalicelib import events
    from chalicelib import runtime as runtime_module
    from chalicelib.clock import FakeClock
    from chalicelib.config import Settings
    from chalicelib.limits import Rate
    from chalicelib.models import JobState
    from chalicelib.runtime import build_runtime
    from chalicelib.service import EnqueueRequest
    from chalicelib.storage.dynamodb import DynamoStore
    from local.sqs_poller import SqsPoller

    clock = FakeClock(START)
    draw = random.Random(seed)
    limit = Rate.parse(rate)
    with mock_aws(), _moto_sqs_on(clock):
        settings = Settings(
            store_url=f"dynamodb://held?queue={QUEUE}&create=1",
            api_keys="bench-key-0123456789=bench",
            concurrency=concurrency,
            demo_handlers=True,
            extra={"SPOOL_LIMITS": json.dumps({"type:echo": {"rate": rate}})},
        )
        rt = build_runtime(settings, clock)
        runtime_module.reset(rt)
        try:
            store = rt.store
            assert isinstance(store, DynamoStore) and store.dispatch is not None
            ids: list[str] = []
            for start in range(0, jobs, 100):
                requests = [
                    EnqueueRequest.model_validate({"type": "echo", "payload": {"i": i}})
                    for i in range(start, min(jobs, start + 100))
                ]
                ids += [r.job.id for r in rt.service.enqueue(requests, "bench")]
            poller = SqsPoller(
                spool_app.app,
                store.dispatch.client,
                store.dispatch.queue_url,
                wait_seconds=0,
                timeout_ms=900_000,
            )
            stats = events.worker_for(rt).stats
            received, idle, done = 0, 0.0, stats.succeeded
            while stats.succeeded < jobs:
                batch = poller.deliver(poller.receive(10, 0))
                received += batch.received
                if on_batch is not None and batch.received:
                    on_batch(received)
                if batch.received:
                    clock.advance(draw.uniform(*batch_seconds))
                    continue
                idle = 0.0 if stats.succeeded > done else idle + tick
                done = stats.succeeded
                if idle > 2 * 900:  # past SQS's longest delay twice: a job was lost
                    raise RuntimeError(f"{jobs - done} jobs never came back")
                clock.advance(tick)
            assert all(_state(store, i) is JobState.SUCCEEDED for i in ids)
            starts = [_started(store, i) for i in ids]
            return HeldRun(
                jobs=jobs,
                rate=rate,
                received=received,
                invocations=poller.invocations,
                seconds=max(starts) - min(starts),
                busiest=busiest_window(starts, limit.per),
                limit=limit.count,
                starts=tuple(sorted(at - START.timestamp() for at in starts)),
            )
        finally:
            events.shutdown()
            runtime_module.reset(None)


def _state(store: Any, job_id: str) -> Any:
    job = store.get(job_id)
    assert job is not None
    return job.state


def _started(store: Any, job_id: str) -> float:
    job = store.get(job_id)
    assert job is not None and job.started_at is not None
    return float(job.started_at.timestamp())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--rate", default="10/s")
    parser.add_argument("--json", action="store_true", help="print the measurement as JSON")
    args = parser.parse_args(argv)
    import logging

    logging.disable(logging.WARNING)  # one "job succeeded" line per job otherwise
    run = measure(args.jobs, args.rate)
    if args.json:
        print(json.dumps({**asdict(run), "per_run": run.per_run, "start_rate": run.start_rate}))
        return 0
    print(
        f"{run.jobs} jobs under {run.rate}, enqueued at once: {run.received} receives "
        f"({run.per_run:.2f} per job run) in {run.invocations} invocations; starts "
        f"{run.start_rate:.2f}/s over {run.seconds:.1f} s, at most {run.busiest} in any "
        f"window of the rate (limit {run.limit})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

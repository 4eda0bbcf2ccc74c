"""AWS requests per job on the deployed path, counted under moto.

    .venv/bin/python -m bench.aws_requests [--jobs 200] [--stage prod] [--json]

Echo jobs from enqueue through success, as on AWS: POST /enqueue through the
API (app.py under chalice's test client), then the worker function fed by the
local SQS poller exactly as Lambda's event source mapping feeds it (Receive,
invoke, Delete of what the function did not report as failed). Every request is
counted with a botocore `before-call` hook on every client used, the poller's
(that is, Lambda's own SQS calls, which are billed) included. No status read is
counted: what a client polls is its own choice.

The settings are the deployed ones, read from the files that deploy them, never
copied here: run_jobs' environment and timeout from .chalice/config.json (worker
concurrency from SPOOL_CONCURRENCY or its default, the visibility timeout), the
store URL's options and the SQS event source's batching window from
infra/generate.py's template, the batch size from app.py's event source.

Two loads:

- full batches: jobs enqueued 10 or 100 to a request, the queue always holding
  a full batch, so every invocation gets `batch_size` messages;
- light load: one job per request, one every `interval` seconds (1 s by
  default). Lambda's poller receives each message as it arrives and invokes the
  function once the batch is full or the batching window, counted from its first
  message, has passed; the bench plays that timeline without waiting it out.
  A sweep over intervals shows where the window stops helping (a trickle slower
  than one job per window is one message per invocation).

Counts are exact and do not depend on the machine: moto answers in-process. The
idle poller's empty long polls are a fixed monthly cost (docs/aws.md), not per job.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from moto import mock_aws

import bench.moto_env  # noqa: F401  (first: moto only, nothing may reach real AWS)
from bench.dynamodb_sizes import item_size

ROOT = Path(__file__).resolve().parent.parent
BENCH_KEY, BENCH_TENANT = "bench-key-0123456789", "bench"
LIGHT_INTERVAL = 1.0  # seconds between jobs under "light load"
SWEEP = (10.0, 2.0, 1.0, 0.5)  # intervals the printed sweep covers
NAMES = {"JobsTable": "bench", "JobsQueue": "bench", "PayloadBucket": "bench-bucket"}


@dataclass(frozen=True)
class Deployed:
    """What a stage deploys for the worker, as the bench needs it."""

    stage: str
    env: dict[str, str]  # run_jobs' SPOOL_* environment, store URL pointed at moto
    batch_size: int  # messages per invocation at most (the event source's BatchSize)
    window: float  # MaximumBatchingWindowInSeconds
    timeout_ms: int  # run_jobs' lambda_timeout
    concurrency: int  # jobs one invocation runs at once (SPOOL_CONCURRENCY)


def deployed(stage: str = "prod") -> Deployed:
    """Read the stage's worker settings from .chalice/config.json, infra/generate.py
    and app.py, so the bench always measures what is deployed."""
    from chalice.app import SQSEventConfig

    import app as spool_app
    from chalicelib.config import Settings
    from infra import generate

    config = json.loads((ROOT / ".chalice" / "config.json").read_text())
    stage_config = config["stages"][stage]
    function = stage_config.get("lambda_functions", {}).get("run_jobs", {})
    env = {
        **config.get("environment_variables", {}),
        **stage_config.get("environment_variables", {}),
        **function.get("environment_variables", {}),
    }
    template = generate.merge_template(generate.visibility_for(generate.worker_timeout(config)))
    function_id, event_id = generate.SQS_EVENT
    worker = template["Resources"][function_id]["Properties"]
    source = worker["Events"][event_id]["Properties"]
    template_env = worker["Environment"]["Variables"]
    url = str(template_env["SPOOL_STORE_URL"]["Fn::Sub"])
    for name, value in NAMES.items():
        url = url.replace("${" + name + "}", value)
    for name, parameter in template["Parameters"].items():  # as deployed with the defaults
        url = url.replace("${" + name + "}", str(parameter.get("Default", "")))
    env["SPOOL_STORE_URL"] = url + "&create=1"
    env["SPOOL_SQS_VISIBILITY_TIMEOUT"] = str(template_env["SPOOL_SQS_VISIBILITY_TIMEOUT"])
    [sqs_source] = [s for s in spool_app.app.event_sources if isinstance(s, SQSEventConfig)]
    batch = int(source.get("BatchSize", sqs_source.batch_size or 10))
    timeout = int(function.get("lambda_timeout", config.get("lambda_timeout", 60)))
    return Deployed(
        stage=stage,
        env=env,
        batch_size=batch,
        window=float(source.get("MaximumBatchingWindowInSeconds", 0)),
        timeout_ms=timeout * 1000,
        concurrency=Settings.from_env(env).concurrency,
    )


@dataclass
class Measurement:
    load: str  # "full" or "light"
    jobs: int
    enqueue_batch: int  # jobs per API request
    interval: float | None  # light load: seconds between jobs
    invocations: int
    dynamodb: int
    sqs: int
    s3: int
    by_operation: dict[str, int]
    item_bytes: int  # one finished job's record, as DynamoDB sizes it
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return self.dynamodb + self.sqs + self.s3

    @property
    def per_job(self) -> float:
        return self.total / self.jobs

    @property
    def per_invocation(self) -> float:
        return self.jobs / self.invocations if self.invocations else 0.0


@dataclass
class _Rig:
    rt: Any
    poller: Any
    client: Any
    calls: Counter[tuple[str, str]]


@contextmanager
def _rig(settings: Deployed) -> Iterator[_Rig]:
    """The deployed runtime on moto, the API's test client, and a poller like Lambda's."""
    from chalice.test import Client

    import app as spool_app
    from chalicelib import events
    from chalicelib import runtime as runtime_module
    from chalicelib.config import Settings
    from chalicelib.runtime import build_runtime
    from chalicelib.storage.dynamodb import DynamoStore
    from local.sqs_poller import SqsPoller

    env = {
        **settings.env,
        "SPOOL_DEMO_HANDLERS": "true",  # echo
        "SPOOL_API_KEYS": f"{BENCH_KEY}={BENCH_TENANT}",  # wins over the SSM parameter
    }
    with mock_aws():
        rt = build_runtime(Settings.from_env(env))
        runtime_module.reset(rt)
        try:
            store = rt.store
            assert isinstance(store, DynamoStore)
            assert store.dispatch is not None and store.blobs is not None
            queue_url = store.dispatch.queue_url  # resolved before counting: once per process
            poller = SqsPoller(
                spool_app.app,
                store.dispatch.client,
                queue_url,
                batch_size=settings.batch_size,
                wait_seconds=0,
                timeout_ms=settings.timeout_ms,
                batching_window=settings.window,
            )
            calls: Counter[tuple[str, str]] = Counter()

            def count(model: Any, **_: Any) -> None:
                calls[(model.service_model.service_name, model.name)] += 1

            for aws_client in (store.ddb, store.dispatch.client, store.blobs.client):
                aws_client.meta.events.register("before-call.*.*", count)
            with Client(spool_app.app) as client:
                yield _Rig(rt, poller, client, calls)
        finally:
            events.shutdown()
            runtime_module.reset(None)


ECHO: dict[str, Any] = {"type": "echo", "payload": {"n": 1}}


def _enqueue(rig: _Rig, jobs: Sequence[Mapping[str, Any]]) -> list[str]:
    size = len(jobs)
    body = jobs[0] if size == 1 else {"jobs": list(jobs)}
    reply = rig.client.http.post(
        "/enqueue",
        headers={"X-API-Key": BENCH_KEY, "Content-Type": "application/json"},
        body=json.dumps(body),
    )
    assert reply.status_code == 201, reply.body
    answer = json.loads(reply.body)
    return [answer["id"]] if size == 1 else [j["id"] for j in answer["jobs"]]


def _measurement(
    rig: _Rig, settings: Deployed, load: str, ids: list[str], batch: int, interval: float | None
) -> Measurement:
    from chalicelib.models import JobState
    from chalicelib.storage.dynamodb_schema import job_key

    snapshot = Counter(rig.calls)  # the checks below are not part of the path
    store = rig.rt.store
    done = [store.get(i) for i in ids]
    assert all(j is not None and j.state is JobState.SUCCEEDED for j in done), "unfinished"
    item = store.ddb.get_item(TableName=store.table, Key=job_key(ids[0]))["Item"]
    by_service: Counter[str] = Counter()
    for (service, _), count in snapshot.items():
        by_service[service] += count
    return Measurement(
        load=load,
        jobs=len(ids),
        enqueue_batch=batch,
        interval=interval,
        invocations=rig.poller.invocations,
        dynamodb=by_service["dynamodb"],
        sqs=by_service["sqs"],
        s3=by_service["s3"],
        by_operation={f"{s}:{op}": n for (s, op), n in sorted(snapshot.items())},
        item_bytes=item_size(item),
        settings={
            "stage": settings.stage,
            "batch_size": settings.batch_size,
            "window": settings.window,
            "concurrency": settings.concurrency,
            "timeout_ms": settings.timeout_ms,
            "store_url": settings.env["SPOOL_STORE_URL"],
        },
    )


def measure_full(
    jobs: int,
    enqueue_batch: int,
    settings: Deployed | None = None,
    make_job: Callable[[int], Mapping[str, Any]] = lambda _: ECHO,
) -> Measurement:
    """Enqueue in batches, then let the poller deliver full batches until the queue is empty."""
    settings = settings or deployed()
    with _rig(settings) as rig:
        ids: list[str] = []
        for start in range(0, jobs, enqueue_batch):
            end = min(jobs, start + enqueue_batch)
            ids += _enqueue(rig, [make_job(i) for i in range(start, end)])
        while rig.poller.deliver(rig.poller.receive(settings.batch_size, 0)).received:
            pass
        return _measurement(rig, settings, "full", ids, enqueue_batch, None)


def measure_light(
    jobs: int, interval: float = LIGHT_INTERVAL, settings: Deployed | None = None
) -> Measurement:
    """One job per request every `interval` seconds; each message is received as it
    arrives, and a batch goes to the function once it is full or the next message
    would arrive after the window (counted from the batch's first) has closed."""
    settings = settings or deployed()
    per_window = max(1, math.ceil(settings.window / interval - 1e-9)) if settings.window else 1
    per_batch = min(settings.batch_size, per_window)
    with _rig(settings) as rig:
        ids: list[str] = []
        pending: list[Any] = []
        for i in range(jobs):
            ids += _enqueue(rig, [ECHO])
            pending += rig.poller.receive(settings.batch_size - len(pending), 0)
            if len(pending) >= per_batch or i == jobs - 1:
                rig.poller.deliver(pending)
                pending = []
        return _measurement(rig, settings, "light", ids, 1, interval)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--stage", default="prod", choices=("dev", "prod"))
    parser.add_argument("--json", action="store_true", help="print the measurements as JSON")
    args = parser.parse_args(argv)
    import logging

    logging.disable(logging.INFO)  # one "job succeeded" line per job otherwise
    settings = deployed(args.stage)
    results = [measure_full(args.jobs, batch, settings) for batch in (10, 100)]
    results += [measure_light(args.jobs, interval, settings) for interval in SWEEP]
    if args.json:
        rows = [{**asdict(r), "per_job": r.per_job} for r in results]
        print(json.dumps(rows, indent=2))
        return 0
    print(
        f"{args.jobs} echo jobs, enqueue through success; stage {settings.stage}: batch "
        f"{settings.batch_size}, window {settings.window:g} s, concurrency "
        f"{settings.concurrency}, timeout {settings.timeout_ms // 1000} s"
    )
    print("| load | jobs/request | jobs/invocation | DynamoDB/job | SQS/job | total/job |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for r in results:
        load = "full batches" if r.load == "full" else f"one every {r.interval:g} s"
        print(
            f"| {load} | {r.enqueue_batch} | {r.per_invocation:.1f} | "
            f"{r.dynamodb / r.jobs:.2f} | {(r.sqs + r.s3) / r.jobs:.2f} | {r.per_job:.2f} |"
        )
    print()
    for r in results:
        ops = ", ".join(f"{k} {v}" for k, v in r.by_operation.items())
        label = f"enqueue {r.enqueue_batch}" if r.load == "full" else f"every {r.interval:g} s"
        print(f"{r.load}, {label}: {ops}")
    print(f"a finished echo job's record: {results[0].item_bytes} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())

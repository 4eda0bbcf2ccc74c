"""AWS requests per job on the deployed path, counted under moto.

    .venv/bin/python -m bench.aws_requests [--jobs 200] [--json]

Enqueue through success, as on AWS: the API function's `add` (one
TransactWriteItems per batch, then SendMessageBatch ten ids at a time); the
worker function fed by the local SQS poller exactly as Lambda's event source
mapping feeds it (ReceiveMessage up to 10, the handler's UpdateItem per claim
and one TransactWriteItems per finished batch, DeleteMessageBatch). Every
request is counted with a botocore `before-call` hook on every client used,
the poller's (that is, Lambda's own SQS calls, which are billed) included.

Counts are exact and do not depend on the machine: moto answers in-process.
The store URL is the deployed one (infra/: reap_every=30, bucket configured).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from collections import Counter
from dataclasses import asdict, dataclass
from typing import Any

for _name, _value in (
    ("AWS_EC2_METADATA_DISABLED", "true"),
    ("AWS_DEFAULT_REGION", "us-east-1"),
    ("AWS_ACCESS_KEY_ID", "testing"),
    ("AWS_SECRET_ACCESS_KEY", "testing"),
):
    os.environ[_name] = _value  # moto only: nothing may reach real AWS

from moto import mock_aws  # noqa: E402

STORE_URL = "dynamodb://bench?queue=bench&bucket=bench-bucket&reap_every=30&create=1"
LAMBDA_BATCH = 10


@dataclass
class Measurement:
    jobs: int
    enqueue_batch: int
    lambda_batch: int
    dynamodb: int
    sqs: int
    s3: int
    by_operation: dict[str, int]
    item_bytes: int  # one finished job's record, as DynamoDB sizes it

    @property
    def total(self) -> int:
        return self.dynamodb + self.sqs + self.s3

    @property
    def per_job(self) -> float:
        return self.total / self.jobs


def item_size(item: dict[str, Any]) -> int:
    """DynamoDB's item size: attribute names plus values (strings, numbers ~ digits)."""
    size = 0
    for name, value in item.items():
        size += len(name.encode())
        if "S" in value:
            size += len(value["S"].encode())
        elif "N" in value:
            size += (len(value["N"].lstrip("-")) + 1) // 2 + 1
    return size


def measure(jobs: int, enqueue_batch: int, lambda_batch: int = LAMBDA_BATCH) -> Measurement:
    import app as spool_app
    from chalicelib import events
    from chalicelib import runtime as runtime_module
    from chalicelib.config import Settings
    from chalicelib.models import JobState
    from chalicelib.runtime import build_runtime
    from chalicelib.service import EnqueueRequest
    from chalicelib.storage.dynamodb import DynamoStore
    from chalicelib.storage.dynamodb_schema import job_key
    from local.sqs_poller import SqsPoller

    with mock_aws(), tempfile.TemporaryDirectory():
        rt = build_runtime(Settings(store_url=STORE_URL, concurrency=lambda_batch))
        runtime_module.reset(rt)
        try:
            store = rt.store
            assert isinstance(store, DynamoStore)
            assert store.dispatch is not None and store.blobs is not None
            calls: Counter[tuple[str, str]] = Counter()

            def count(model: Any, **_: Any) -> None:
                calls[(model.service_model.service_name, model.name)] += 1

            queue_url = store.dispatch.queue_url  # resolved before counting: once per process
            for client in (store.ddb, store.dispatch.client, store.blobs.client):
                client.meta.events.register("before-call.*.*", count)

            ids: list[str] = []
            request = EnqueueRequest(type="echo", payload={"n": 1})
            for start in range(0, jobs, enqueue_batch):
                size = min(enqueue_batch, jobs - start)
                added = rt.service.enqueue([request] * size, "bench")
                ids += [r.job.id for r in added]
            poller = SqsPoller(
                spool_app.app, store.dispatch.client, queue_url, batch_size=lambda_batch,
                wait_seconds=0,
            )  # fmt: skip
            while poller.poll_once().received:
                pass
            calls_snapshot = Counter(calls)
            done = [store.get(i) for i in ids]
            assert all(j is not None and j.state is JobState.SUCCEEDED for j in done), "unfinished"
            item = store.ddb.get_item(TableName=store.table, Key=job_key(ids[0]))["Item"]
        finally:
            events.shutdown()
            runtime_module.reset(None)
    by_service: Counter[str] = Counter()
    for (service, _), n in calls_snapshot.items():
        by_service[service] += n
    return Measurement(
        jobs=jobs,
        enqueue_batch=enqueue_batch,
        lambda_batch=lambda_batch,
        dynamodb=by_service["dynamodb"],
        sqs=by_service["sqs"],
        s3=by_service["s3"],
        by_operation={f"{s}:{op}": n for (s, op), n in sorted(calls_snapshot.items())},
        item_bytes=item_size(dict(item)),
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--json", action="store_true", help="print the measurements as JSON")
    args = parser.parse_args(argv)
    results = [measure(args.jobs, batch) for batch in (1, 10, 100)]
    if args.json:
        print(json.dumps([{**asdict(r), "per_job": r.per_job} for r in results], indent=2))
        return 0
    print(f"{args.jobs} echo jobs, enqueue through success; Lambda batch {LAMBDA_BATCH}")
    print("| enqueue batch | DynamoDB/job | SQS/job | S3/job | total/job |")
    print("| ---: | ---: | ---: | ---: | ---: |")
    for r in results:
        print(
            f"| {r.enqueue_batch} | {r.dynamodb / r.jobs:.2f} | {r.sqs / r.jobs:.2f} | "
            f"{r.s3 / r.jobs:.2f} | {r.per_job:.2f} |"
        )
    print()
    for r in results:
        ops = ", ".join(f"{k} {v}" for k, v in r.by_operation.items())
        print(f"batch {r.enqueue_batch}: {ops}")
    print(f"a finished echo job's record: {results[0].item_bytes} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())

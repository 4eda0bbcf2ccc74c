"""The SQS worker (app.py's run_jobs, events.handle_sqs) under SQS's at-least-once
delivery, against DynamoDB and SQS on moto_server (s62, helper E): messages are
received from the real queue and handed over as Lambda hands them. Two invocations
given the same message at once run the job (each attempt of a retried one) once; a
redelivery while the job runs leaves the first run's result; an invocation killed
mid-job at its "timeout" (a SIGKILLed process) leaves a job the next delivery after
the lease runs, once; records naming a job that is gone, finished, cancelled, another
tenant's or nothing at all are answered exactly (only the unreadable one is handed
back); a store outage mid-batch hands back only the unfinished job."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError

from chalicelib import events
from chalicelib.ids import new_job_id
from chalicelib.models import JobState
from chalicelib.runtime import Runtime
from chalicelib.service import EnqueueRequest
from local.emulator import context
from tests.apikit import TENANT_A, TENANT_B, installed, settings_for
from tests.moto_proc import MotoServer, moto_server
from tests.procs import ROOT, guarded_env, stop

pytestmark = [pytest.mark.aws, pytest.mark.timeout(180)]

LEASE = 2.0  # seconds: a killed invocation's job is free again soon
LONG_LEASE = 60.0  # where a second attempt would be a lapse on a loaded machine, not a bug
VISIBILITY = 2  # the queue's VisibilityTimeout: a killed invocation's message comes back soon


@pytest.fixture
def moto(tmp_path: Path) -> Iterator[MotoServer]:
    with moto_server(tmp_path / "moto.log") as server:
        yield server


def store_url(moto: MotoServer) -> str:
    return f"dynamodb://jobs?queue=jobs&bucket=jobs-bucket&endpoint={moto.endpoint}&create=1"


@pytest.fixture
def rt(moto: MotoServer, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Runtime]:
    """The app on moto_server, with a lease of LEASE s (or the test's indirect param:
    a long one where a lapse on a loaded machine would be a second attempt)."""
    settings = settings_for(
        tmp_path,
        store_url=store_url(moto),
        lease_seconds=getattr(request, "param", LEASE),
        extra={"SPOOL_SQS_VISIBILITY_TIMEOUT": str(VISIBILITY)},
    )
    with installed(settings) as runtime:
        dispatch = runtime.store.dispatch  # type: ignore[attr-defined]
        dispatch.client.set_queue_attributes(
            QueueUrl=dispatch.queue_url, Attributes={"VisibilityTimeout": str(VISIBILITY)}
        )
        yield runtime


def enqueue(rt: Runtime, type_: str, tenant: str = TENANT_A, **payload: Any) -> str:
    request = EnqueueRequest.model_validate({"type": type_, "payload": payload})
    return rt.service.enqueue([request], tenant)[0].job.id


def receive(rt: Runtime, want: int, seconds: float = 20.0) -> list[dict[str, Any]]:
    """Lambda's records for `want` messages received from the jobs queue (fewer if
    the queue has no more within `seconds`)."""
    dispatch = rt.store.dispatch  # type: ignore[attr-defined]
    records: list[dict[str, Any]] = []
    end = time.monotonic() + seconds
    while len(records) < want and time.monotonic() < end:
        got = dispatch.client.receive_message(
            QueueUrl=dispatch.queue_url,
            MaxNumberOfMessages=min(10, want - len(records)),
            WaitTimeSeconds=1,
            AttributeNames=["All"],
        )
        for m in got.get("Messages", []):
            records.append(
                {
                    "messageId": m["MessageId"],
                    "receiptHandle": m["ReceiptHandle"],
                    "body": m["Body"],
                    "attributes": m.get("Attributes", {}),
                    "messageAttributes": {},
                    "md5OfBody": m["MD5OfBody"],
                    "eventSource": "aws:sqs",
                    "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:jobs",
                    "awsRegion": "us-east-1",
                }
            )
    return records


def answer(records: list[dict[str, Any]]) -> set[str]:
    """Run the batch as Lambda would and delete what it acknowledged (the event source
    mapping deletes every message not in batchItemFailures)."""
    got = events.handle_sqs({"Records": records}, context("run_jobs", timeout_ms=120_000))
    failed = {f["itemIdentifier"] for f in got["batchItemFailures"]}
    dispatch = rt_of().store.dispatch  # type: ignore[attr-defined]
    for record in records:
        if record["messageId"] not in failed:
            # A receipt handle of an earlier receive may be stale: SQS refuses it.
            with contextlib.suppress(ClientError):
                dispatch.client.delete_message(
                    QueueUrl=dispatch.queue_url, ReceiptHandle=record["receiptHandle"]
                )
    return failed


def rt_of() -> Runtime:
    from chalicelib import runtime

    return runtime.current()


def id_of(record: dict[str, Any]) -> str:
    """The job id a message names: a bare id, or {"id": ID}."""
    body = record["body"]
    return str(json.loads(body)["id"]) if body.startswith("{") else body


def body_of(job_id: str) -> str:
    return json.dumps({"id": job_id})


def state(rt: Runtime, job_id: str) -> JobState:
    job = rt.store.get(job_id)
    assert job is not None
    return job.state


def test_records_for_gone_finished_cancelled_other_tenant_and_unreadable_jobs(
    rt: Runtime,
) -> None:
    done = enqueue(rt, "echo", n=1)
    first = receive(rt, 1)
    assert answer(first) == set()
    assert state(rt, done) is JobState.SUCCEEDED
    cancelled = enqueue(rt, "echo", n=2)
    rt.service.cancel(cancelled, TENANT_A)
    other = enqueue(rt, "echo", tenant=TENANT_B, n=3)
    received = receive(rt, 2)
    assert sorted(id_of(r) for r in received) == sorted([cancelled, other])
    records = [
        {**received[0], "messageId": "gone", "body": body_of(new_job_id())},
        {**received[0], "messageId": "finished", "body": body_of(done)},
        {**received[0], "messageId": "malformed", "body": '{"id": '},
        *received,
    ]
    assert answer(records) == {"malformed"}
    assert state(rt, done) is JobState.SUCCEEDED
    assert state(rt, cancelled) is JobState.CANCELLED
    assert state(rt, other) is JobState.SUCCEEDED
    assert len(rt.store.attempts(done) or []) == 1
    assert succeeded_total(rt) == 2


def invoke_in_child(
    rt: Runtime, tmp_path: Path, moto: MotoServer, records: list[dict[str, Any]]
) -> subprocess.Popen[str]:
    """A process that runs `records` through app.py's SQS handler, as a Lambda
    invocation does (its own runtime on the same table and queue)."""
    event = tmp_path / f"event-{time.monotonic_ns()}.json"
    event.write_text(json.dumps({"Records": records}))
    env = {
        **guarded_env(),
        "SPOOL_STORE_URL": store_url(moto),
        "SPOOL_LEASE_SECONDS": str(rt.settings.lease_seconds),
        "SPOOL_SQS_VISIBILITY_TIMEOUT": str(VISIBILITY),
        "SPOOL_DEMO_HANDLERS": "1",
    }
    return subprocess.Popen(
        [sys.executable, "-m", "tests.test_chaos_s62E_sqs_delivery", str(event)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=(tmp_path / "child.log").open("a"),
        text=True,
    )


def test_an_invocation_killed_mid_job_leaves_it_to_the_next_delivery(
    rt: Runtime, moto: MotoServer, tmp_path: Path
) -> None:
    job_id = enqueue(rt, "sleep", seconds=3)
    records = receive(rt, 1)
    child = invoke_in_child(rt, tmp_path, moto, records)
    try:
        wait_running(rt, job_id, child, tmp_path / "child.log")
        child.kill()  # Lambda's timeout: no finally, no last write
        child.wait(10)
    finally:
        stop(child)
    run_until_succeeded(rt, job_id)
    attempts = rt.store.attempts(job_id) or []
    assert [a.outcome for a in attempts] == ["lease_expired", "succeeded"]
    assert succeeded_total(rt) == 1


def run_until_succeeded(rt: Runtime, job_id: str) -> None:
    """Drive the minute's rule (which reaps lapsed leases and sends their jobs) and
    the queue, as AWS would, until the job has succeeded."""
    end = time.monotonic() + 60
    while state(rt, job_id) is not JobState.SUCCEEDED:
        assert time.monotonic() < end, rt.store.get(job_id)
        events.handle_schedule(
            {
                "source": "aws.events",
                "detail-type": "Scheduled Event",
                "detail": {},
                "resources": [],
                "time": "now",
            },
            context("schedule"),
        )
        again = receive(rt, 10, seconds=3)
        if again:
            assert answer(again) == set()


def succeeded_total(rt: Runtime) -> int:
    """The store's kept count of succeeded jobs, and its succeeded counter, which must
    agree (both are written by every process that finishes a job)."""
    kept = sum(n for (_, s), n in rt.store.counts().items() if s is JobState.SUCCEEDED)
    counted = sum(n for k, n in rt.store.counters().items() if k.event == "succeeded")
    assert kept == counted
    return kept


def wait_running(rt: Runtime, job_id: str, child: subprocess.Popen[str], log: Path) -> None:
    end = time.monotonic() + 60
    while state(rt, job_id) is not JobState.RUNNING:
        assert child.poll() is None, log.read_text()
        assert time.monotonic() < end, "the job never started"
        time.sleep(0.05)


@pytest.mark.parametrize("rt", [LONG_LEASE], indirect=True)
def test_the_same_message_twice_at_once_runs_the_job_once(
    rt: Runtime, moto: MotoServer, tmp_path: Path
) -> None:
    job_id = enqueue(rt, "sleep", seconds=2)
    records = receive(rt, 1)
    twins = [invoke_in_child(rt, tmp_path, moto, records) for _ in range(2)]
    try:
        answers = [json.loads(child.communicate(timeout=90)[0]) for child in twins]
    finally:
        for child in twins:
            stop(child)
    assert all(a == {"batchItemFailures": []} for a in answers), answers
    assert state(rt, job_id) is JobState.SUCCEEDED
    assert [a.outcome for a in rt.store.attempts(job_id) or []] == ["succeeded"]
    assert succeeded_total(rt) == 1


@pytest.mark.parametrize("rt", [LONG_LEASE], indirect=True)
def test_a_retried_job_given_twice_at_each_attempt_runs_each_attempt_once(
    rt: Runtime, moto: MotoServer, tmp_path: Path
) -> None:
    job_id = enqueue(rt, "fail", times=1)  # fails its first attempt, then succeeds
    for _ in range(2):  # the first message, then the retry's own (delayed) message
        records = receive(rt, 1)
        assert [id_of(r) for r in records] == [job_id]
        twins = [invoke_in_child(rt, tmp_path, moto, records) for _ in range(2)]
        try:
            answers = [json.loads(child.communicate(timeout=90)[0]) for child in twins]
        finally:
            for child in twins:
                stop(child)
        assert all(a == {"batchItemFailures": []} for a in answers), answers
        dispatch = rt.store.dispatch  # type: ignore[attr-defined]
        dispatch.client.delete_message(
            QueueUrl=dispatch.queue_url, ReceiptHandle=records[0]["receiptHandle"]
        )
    assert state(rt, job_id) is JobState.SUCCEEDED
    attempts = rt.store.attempts(job_id) or []
    assert [(a.number, a.outcome) for a in attempts] == [(1, "retrying"), (2, "succeeded")]
    counted = {k.event: n for k, n in rt.store.counters().items()}
    assert counted == {"enqueued": 1, "failed": 1, "retried": 1, "succeeded": 1}
    assert succeeded_total(rt) == 1


@pytest.mark.parametrize("rt", [LONG_LEASE], indirect=True)
def test_a_redelivery_while_the_job_still_runs_neither_finishes_it_twice_nor_loses_it(
    rt: Runtime, moto: MotoServer, tmp_path: Path
) -> None:
    job_id = enqueue(rt, "sleep", seconds=4)
    records = receive(rt, 1)
    child = invoke_in_child(rt, tmp_path, moto, records)
    try:
        wait_running(rt, job_id, child, tmp_path / "child.log")
        # The visibility timeout lapsed: another invocation is given the message.
        assert answer(records) == set()
        assert state(rt, job_id) is JobState.RUNNING
        first = json.loads(child.communicate(timeout=90)[0])
    finally:
        stop(child)
    assert first == {"batchItemFailures": []}
    job = rt.store.get(job_id)
    assert job is not None and job.state is JobState.SUCCEEDED and job.result is not None
    assert [a.outcome for a in rt.store.attempts(job_id) or []] == ["succeeded"]
    assert succeeded_total(rt) == 1


def test_a_store_outage_mid_batch_reports_the_unfinished_and_reruns_nothing_finished(
    rt: Runtime,
) -> None:
    slow = enqueue(rt, "sleep", seconds=2)
    quick = [enqueue(rt, "echo", n=i) for i in range(3)]
    records = receive(rt, 4)
    by_id = {id_of(r): r["messageId"] for r in records}
    down = threading.Event()

    def refuse(**_: Any) -> None:
        if down.is_set():  # what a stopped moto_server answers: nothing
            raise EndpointConnectionError(endpoint_url="http://127.0.0.1:1")

    ddb = rt.store.ddb  # type: ignore[attr-defined]
    ddb.meta.events.register("before-send.dynamodb.*", refuse)
    answers: list[set[str]] = []
    batch = threading.Thread(target=lambda: answers.append(answer(records)))
    batch.start()
    end = time.monotonic() + 60
    while state(rt, slow) is not JobState.RUNNING or any(
        state(rt, j) is not JobState.SUCCEEDED for j in quick
    ):
        assert time.monotonic() < end, "the batch never got going"
        time.sleep(0.05)
    down.set()
    batch.join(120)
    assert not batch.is_alive()
    down.clear()
    assert answers == [{by_id[slow]}]  # the finished three are acknowledged
    # SQS may deliver an acknowledged message again: the whole batch comes back.
    assert answer(records) == set()
    run_until_succeeded(rt, slow)
    for j in quick:
        assert [a.outcome for a in rt.store.attempts(j) or []] == ["succeeded"]
    assert [a.outcome for a in rt.store.attempts(slow) or []][-1] == "succeeded"
    assert succeeded_total(rt) == 4


def main(argv: list[str]) -> int:
    import app

    event = json.loads(Path(argv[0]).read_text())
    got = app.app.handler_map["run_jobs"](event, context("run_jobs", timeout_ms=120_000))
    print(json.dumps(got))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

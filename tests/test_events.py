"""app.py's worker entry points, driven with the event shapes AWS sends."""

from __future__ import annotations

import http.server
import threading
import time

import pytest
from chalice.test import Client

import app as spool_app
from chalicelib import events
from chalicelib.clock import FakeClock
from chalicelib.errors import StoreUnavailable
from chalicelib.models import JobQuery, JobState
from chalicelib.periodic import SYSTEM_TENANT
from chalicelib.runtime import Runtime
from chalicelib.service import EnqueueRequest
from local.emulator import Emulator, context, scheduled_event, sqs_event
from tests.apikit import TENANT_A, installed, settings_for


def add(rt: Runtime, **fields: object) -> str:
    request = EnqueueRequest.model_validate({"type": "echo", **fields})
    return rt.service.enqueue([request], TENANT_A)[0].job.id


def state(rt: Runtime, job_id: str) -> JobState:
    job = rt.store.get(job_id)
    assert job is not None
    return job.state


def wait_succeeded(rt: Runtime, *job_ids: str, seconds: float = 15) -> list[JobState]:
    """The jobs' states once all have succeeded, or when `seconds` have passed."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if all(state(rt, i) == JobState.SUCCEEDED for i in job_ids):
            break
        time.sleep(0.05)
    return [state(rt, i) for i in job_ids]


def run_jobs(event: dict[str, object], timeout_ms: int = 900_000) -> dict[str, object]:
    result: dict[str, object] = spool_app.app.handler_map["run_jobs"](
        event, context("run_jobs", timeout_ms)
    )
    return result


J1, J2, J3 = (f"j_{n:032x}" for n in (1, 2, 3))


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (f'{{"id": "{J1}"}}', J1),
        (J2, J2),
        (f"  {J3}\n", J3),
        ("{}", None),
        ('{"id": 5}', None),
        ("[1, 2]", None),  # not a job id: never taken as a DynamoDB key
        ("{not json", None),
        ("", None),
        ('{"id": "j_1"}', None),
        ("j_doesnotexist", None),
        ("A" * 3000, None),
        ('{"a":' * 100_000 + "1" + "}" * 100_000, None),  # RecursionError: the batch failed
        ("{" + "[" * 100_000, None),
    ],
    ids=lambda v: v[:40] if isinstance(v, str) else str(v),
)
def test_message_bodies(body: str, expected: str | None) -> None:
    assert events.message_job_id(body) == expected


def test_sqs_messages_run_their_jobs(rt: Runtime) -> None:
    a, b = add(rt, payload={"n": 1}), add(rt, payload={"n": 2})
    event = sqs_event(spool_app.app, [a])
    event["Records"].append({**event["Records"][0], "messageId": "bare", "body": b})
    assert run_jobs(event) == {"batchItemFailures": []}
    assert state(rt, a) == state(rt, b) == JobState.SUCCEEDED


def test_sqs_reports_messages_naming_no_job_and_skips_redundant_ones(rt: Runtime) -> None:
    done = add(rt)
    run_jobs(sqs_event(spool_app.app, [done]))
    event = sqs_event(spool_app.app, [done, J1])
    event["Records"].append({**event["Records"][0], "messageId": "junk", "body": "{oops"})
    # Already finished and unknown jobs are redundant deliveries: acknowledged, not retried.
    assert run_jobs(event) == {"batchItemFailures": [{"itemIdentifier": "junk"}]}


def test_sqs_defers_when_the_deadline_is_too_close(rt: Runtime) -> None:
    job_id = add(rt)
    with Client(spool_app.app, stage_name="local") as client:
        event = client.events.generate_sqs_event([f'{{"id": "{job_id}"}}'], queue_name="spool-jobs")
        # The test client's Lambda context has 3 s: less than the longest handler timeout.
        result = client.lambda_.invoke("run_jobs", event).payload
    assert result == {"batchItemFailures": [{"itemIdentifier": "message-id"}]}
    assert state(rt, job_id) == JobState.QUEUED


def test_sqs_redelivers_everything_when_the_store_fails(
    rt: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    job_id = add(rt)

    def down(*args: object, **kwargs: object) -> None:
        raise StoreUnavailable("down")

    monkeypatch.setattr(rt.store, "claim", down)
    event = sqs_event(spool_app.app, [job_id])
    assert run_jobs(event) == {
        "batchItemFailures": [{"itemIdentifier": event["Records"][0]["messageId"]}]
    }


def test_schedule_drains_due_jobs(rt: Runtime) -> None:
    ids = [add(rt, payload={"n": n}) for n in range(5)]
    later = add(rt, delay=3600)
    handler = spool_app.app.handler_map["drain_due"]
    done = handler(scheduled_event(spool_app.app), context("drain_due"))
    assert done["claimed"] == 5 and done["succeeded"] == 5
    assert all(state(rt, i) == JobState.SUCCEEDED for i in ids)
    assert state(rt, later) == JobState.QUEUED


def test_schedule_fires_periodic_ticks_once_and_runs_them(tmp_path) -> None:
    schedules = '[{"name": "heartbeat", "type": "echo", "every": "1h", "payload": {"ping": 1}}]'
    settings = settings_for(tmp_path, extra={"SPOOL_SCHEDULES": schedules})
    clock = FakeClock()
    with installed(settings, clock) as rt:
        handler = spool_app.app.handler_map["drain_due"]
        first = handler(scheduled_event(spool_app.app), context("drain_due"))
        clock.advance(60)
        again = handler(scheduled_event(spool_app.app), context("drain_due"))
        clock.advance(3600)
        next_hour = handler(scheduled_event(spool_app.app), context("drain_due"))
        page = rt.store.list_jobs(JobQuery(tenant=SYSTEM_TENANT))
    assert (first["periodic_enqueued"], first["succeeded"]) == (1, 1)
    assert (again["periodic_enqueued"], again["claimed"]) == (0, 0)  # the same tick: once
    assert (next_hour["periodic_enqueued"], next_hour["succeeded"]) == (1, 1)
    assert [(j.type, j.state, j.result) for j in page.jobs] == [
        ("echo", JobState.SUCCEEDED, {"ping": 1})
    ] * 2


def test_schedule_claims_nothing_it_could_not_finish_before_the_deadline(rt: Runtime) -> None:
    job_id = add(rt)
    with Client(spool_app.app, stage_name="local") as client:
        event = client.events.generate_cw_event("aws.events", "Scheduled Event", {}, [])
        done = client.lambda_.invoke("drain_due", event).payload  # a 3 s context
    assert done["claimed"] == 0
    assert state(rt, job_id) == JobState.QUEUED


class _Gateway(http.server.BaseHTTPRequestHandler):
    received: list[tuple[str, str, bytes]] = []

    def do_PUT(self) -> None:
        length = int(self.headers.get("Content-Length", 0))
        self.received.append((self.command, self.path, self.rfile.read(length)))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_POST = do_PUT

    def log_message(self, *args: object) -> None:
        pass


def test_worker_invocations_push_timings_to_the_pushgateway(tmp_path) -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Gateway)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    _Gateway.received = []
    url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        with installed(settings_for(tmp_path, pushgateway_url=url)) as rt:
            job_id = add(rt)
            run_jobs(sqs_event(spool_app.app, [job_id]))
    finally:
        server.shutdown()
        server.server_close()
    assert len(_Gateway.received) == 1
    method, path, body = _Gateway.received[0]
    assert method == "PUT" and path.startswith("/metrics/job/spool_worker/instance/")
    text = body.decode()
    assert (
        'spool_job_run_duration_seconds_count{outcome="succeeded",queue="default",type="echo"} 1.0'
        in text
    )
    assert "spool_job_queue_wait_seconds_bucket" in text
    assert "spool_jobs_enqueued_total" not in text  # system-wide counts are scraped, not pushed


def test_spool_serve_s_worker_pushes_on_its_interval_not_after_every_invocation(
    tmp_path,
) -> None:
    """It pushed after each drain_due, about twice a second while idle, ignoring
    SPOOL_PUSH_INTERVAL, and a slow gateway held every drain for its timeout."""
    from local.serve import local_worker

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Gateway)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    _Gateway.received = []
    url = f"http://127.0.0.1:{server.server_address[1]}"
    settings = settings_for(tmp_path, pushgateway_url=url, extra={"SPOOL_PUSH_INTERVAL": "3600"})
    try:
        with installed(settings) as rt:
            worker = local_worker(spool_app.app, rt)
            worker.start()
            try:
                ids = [add(rt) for _ in range(3)]
                wait_succeeded(rt, *ids)
                time.sleep(1.0)  # a second of idle drains
                assert worker.invocations >= 2
                assert _Gateway.received == []  # the interval is an hour
            finally:
                worker.stop()
            assert all(state(rt, i) == JobState.SUCCEEDED for i in ids)
            assert events.push_metrics(rt) is True  # Lambda's push after each invocation is back
    finally:
        server.shutdown()
        server.server_close()
    exit_push, _after_stop = _Gateway.received  # the exit push, then push_metrics above
    assert b"spool_job_run_duration_seconds_count" in exit_push[2]  # what the drains timed


def test_a_dead_pushgateway_does_not_fail_the_invocation(tmp_path) -> None:
    with installed(settings_for(tmp_path, pushgateway_url="http://127.0.0.1:9")) as rt:
        job_id = add(rt)
        assert run_jobs(sqs_event(spool_app.app, [job_id])) == {"batchItemFailures": []}
        assert state(rt, job_id) == JobState.SUCCEEDED


def test_emulator_runs_jobs_as_they_arrive_and_as_they_fall_due(rt: Runtime) -> None:
    emulator = Emulator(spool_app.app, rt)
    emulator.start()
    try:
        first = add(rt)
        retried = add(rt, type="fail", payload={"times": 1})  # fails once, backoff <= 1 s
        wait_succeeded(rt, first, retried)
    finally:
        emulator.stop()
    assert state(rt, first) == JobState.SUCCEEDED
    job = rt.store.get(retried)
    assert job is not None and job.state == JobState.SUCCEEDED and job.attempts == 2
    assert emulator.invocations >= 2


def test_a_stopped_emulator_is_no_longer_a_live_worker(rt: Runtime) -> None:
    """`spool serve` stopped by Ctrl-C or SIGTERM: its emulated worker counted live for
    a minute after the process was gone, and its row stayed in the store."""
    emulator = Emulator(spool_app.app, rt)
    emulator.start()
    try:
        wait_succeeded(rt, add(rt))
        assert rt.store.live_workers(600) != []  # the drains beat while it serves
    finally:
        emulator.stop()
    assert rt.store.live_workers(600) == []


def test_emulated_events_have_the_shapes_aws_sends() -> None:
    scheduled = scheduled_event(spool_app.app)
    assert scheduled["source"] == "aws.events"
    assert scheduled["detail-type"] == "Scheduled Event"
    assert scheduled["resources"][0].startswith("arn:aws:events:")
    records = sqs_event(spool_app.app, [J1, J2])["Records"]
    assert [r["eventSource"] for r in records] == ["aws:sqs", "aws:sqs"]
    assert len({r["messageId"] for r in records}) == 2
    assert [events.message_job_id(r["body"]) for r in records] == [J1, J2]


def test_the_scheduled_event_is_the_shape_chalices_generator_makes() -> None:
    """local/emulator.py builds the event itself (chalice.test loads chalice's whole
    command line); it must stay what chalice's TestEventsClient makes, with the time
    of the invocation instead of chalice's fixed one."""
    from datetime import datetime

    from chalice.test import TestEventsClient

    ours = scheduled_event(spool_app.app)
    chalices = TestEventsClient(spool_app.app).generate_cw_event(
        source="aws.events",
        detail_type="Scheduled Event",
        detail={},
        resources=[
            f"arn:aws:events:us-east-1:123456789012:rule/{spool_app.app.app_name}-drain_due"
        ],
        region="us-east-1",
    )
    assert {**ours, "time": None} == {**chalices, "time": None}
    assert datetime.strptime(ours["time"], "%Y-%m-%dT%H:%M:%SZ")


def test_a_stopped_emulator_ends_at_once_not_at_its_next_look(
    rt: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The loop waits on the store's notifier (new work, or IDLE_CHECK), not on the
    stop: every stop of `spool serve` waited out up to IDLE_CHECK for it. With a look
    an hour away, stop must still end the loop (Emulator.stop wakes the notifier)."""
    import local.emulator as emulator_module

    monkeypatch.setattr(emulator_module, "IDLE_CHECK", 3600.0)
    emulator = Emulator(spool_app.app, rt)
    emulator.start()
    try:
        assert wait_succeeded(rt, add(rt)) == [JobState.SUCCEEDED]  # it ran: the loop is idle now
    finally:
        emulator.stop(timeout=20)
    thread = emulator._thread
    assert thread is not None and not thread.is_alive()

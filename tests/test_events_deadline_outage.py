"""A Lambda invocation stops riding out a store outage before its deadline.

The SQS worker (`run_jobs`) and the scheduled drain (`drain_due`) wait out a
store that will not take a finished job's outcome, for up to a lease. On Lambda
the function's deadline comes first: killed mid-wait, the invocation answered
nothing, so SQS could not tell which messages to deliver again. Now the wait
ends FLUSH_MARGIN before the deadline (the context's remaining time), and the
SQS function names the messages of jobs whose outcome was not written in
`batchItemFailures`, so SQS redelivers them (their leases lapse meanwhile, and
the redelivery runs them again). Real Postgres, cut by a TCP forwarder
(tests/pg_proxy.py) while the job runs.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

import app as spool_app
from chalicelib import events
from chalicelib import runtime as runtime_module
from chalicelib.handlers import JobContext, Registry, handler, registry
from chalicelib.models import JobState
from chalicelib.runtime import Runtime
from chalicelib.service import EnqueueRequest, Service
from chalicelib.storage import open_store
from local.emulator import context, scheduled_event, sqs_event
from tests.apikit import TENANT_A, settings_for
from tests.pg_proxy import PgProxy
from tests.pg_support import fresh_schema, with_port

pytestmark = pytest.mark.timeout(180)

JOB_TYPE = "test.deadline_outage"
STARTED = threading.Event()
RELEASE = threading.Event()
FUNCTION_MS = 12_000  # room for the job (timeout 2 s + the drain's margin), no more


class Empty(BaseModel):
    pass


@handler(JOB_TYPE, payload=Empty, timeout=2.0, max_attempts=5)
def hold(payload: Empty, ctx: JobContext) -> str:
    """Runs until the test has cut the store off, then finishes: its outcome is due
    while the store is unreachable."""
    STARTED.set()
    RELEASE.wait(1.5)
    return "done"


@pytest.fixture
def cut_off(tmp_path: Path) -> Iterator[tuple[Runtime, PgProxy, str]]:
    """The process-wide runtime on Postgres through a forwarder; the direct URL."""
    STARTED.clear()
    RELEASE.clear()
    proxy = PgProxy()
    try:
        with fresh_schema() as direct:
            url = with_port(direct, proxy.port) + "&pool_timeout=1"
            settings = settings_for(tmp_path, store_url=url, demo_handlers=False)
            store = open_store(url)
            # Only this job type: the drain claims while the longest registered
            # timeout fits, and other test modules register long ones here.
            own = Registry()
            own.register(registry.get(JOB_TYPE))
            rt = Runtime(settings, store, own, Service(store, own, settings))
            runtime_module.reset(rt)  # what app.py's handlers use
            try:
                yield rt, proxy, direct
            finally:
                proxy.restore()  # the worker's close writes nothing through a cut
                events.shutdown()
                runtime_module.reset(None)  # closes the store
    finally:
        proxy.close()


def _enqueue(rt: Runtime) -> str:
    request = EnqueueRequest(type=JOB_TYPE, payload={})
    return rt.service.enqueue([request], TENANT_A)[0].job.id


def _invoke_cut(proxy: PgProxy, call: Any) -> tuple[Any, Any]:
    """Invoke `call(ctx)` on a thread; cut the store once the job runs; its answer and ctx."""
    ctx = context("fn", FUNCTION_MS)
    answer: dict[str, Any] = {}
    thread = threading.Thread(target=lambda: answer.update(result=call(ctx)), daemon=True)
    thread.start()
    assert STARTED.wait(30), "the job never started"
    proxy.cut()
    RELEASE.set()
    thread.join(120)  # a bound on the way, not on speed: a lease is 60 s
    assert not thread.is_alive(), "the invocation never returned"
    return answer["result"], ctx


def _state(direct: str, job_id: str) -> JobState:
    store = open_store(direct)
    try:
        job = store.get(job_id)
        assert job is not None
        return job.state
    finally:
        store.close()


def test_the_sqs_worker_hands_back_messages_whose_outcome_it_could_not_write(
    cut_off: tuple[Runtime, PgProxy, str],
) -> None:
    rt, proxy, direct = cut_off
    job_id = _enqueue(rt)
    event = sqs_event(spool_app.app, [job_id])
    run_jobs = spool_app.app.handler_map["run_jobs"]
    result, ctx = _invoke_cut(proxy, lambda ctx: run_jobs(event, ctx))
    message = event["Records"][0]["messageId"]
    assert result == {"batchItemFailures": [{"itemIdentifier": message}]}
    assert ctx.get_remaining_time_in_millis() > 0, "it waited past the function's deadline"
    proxy.restore()
    # Not written: still `running` under the lapsing lease, so the redelivery runs it.
    assert _state(direct, job_id) is JobState.RUNNING


def test_the_scheduled_drain_lets_go_of_unwritten_outcomes_before_its_deadline(
    cut_off: tuple[Runtime, PgProxy, str],
) -> None:
    rt, proxy, direct = cut_off
    job_id = _enqueue(rt)
    drain_due = spool_app.app.handler_map["drain_due"]
    result, ctx = _invoke_cut(proxy, lambda ctx: drain_due(scheduled_event(spool_app.app), ctx))
    assert result["unwritten"] == 1, result
    assert ctx.get_remaining_time_in_millis() > 0, "it waited past the function's deadline"
    proxy.restore()
    assert _state(direct, job_id) is JobState.RUNNING

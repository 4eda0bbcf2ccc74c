"""Prometheus metrics: system-wide totals, timings, a valid exposition, who may
read it (an operator key, not a tenant's), and a bounded set of queue labels."""

from __future__ import annotations

import http.server
import logging
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from chalice.test import Client

import app as spool_app
from chalicelib.api.metric_labels import OTHER
from chalicelib.api.metrics import Metrics
from chalicelib.clock import FakeClock
from chalicelib.config import Settings
from chalicelib.handlers import registry
from chalicelib.models import JobState
from chalicelib.runtime import Runtime
from chalicelib.storage import open_store
from chalicelib.storage.base import JobStore
from chalicelib.worker import Worker, WorkerConfig
from local.emulator import context, scheduled_event
from tests.apikit import API_KEYS, KEY_A, KEY_B, TENANT_A, Api, installed, settings_for
from tests.factories import new_job

ROOT = Path(__file__).resolve().parents[1]
DEMO = "chalicelib.builtin.demo"  # echo and fail, named so any settings offer them
OPERATOR_KEY = "ops-key-3141592653"
METRICS_KEYS = f"{OPERATOR_KEY}=prometheus"


def metrics_settings(tmp_path: Path, **overrides: Any) -> Settings:
    return settings_for(
        tmp_path, handlers=(DEMO,), extra={"SPOOL_METRICS_KEYS": METRICS_KEYS}, **overrides
    )


@pytest.fixture
def rt(tmp_path: Path) -> Iterator[Runtime]:
    with installed(metrics_settings(tmp_path)) as runtime:
        yield runtime


def scrape(api: Api) -> str:
    reply = api.get("/metrics", key=OPERATOR_KEY)
    assert reply.status == 200, reply.body
    return reply.body.decode()


def sample(text: str, name: str, **labels: str) -> float:
    """The value of one sample in an exposition, matched by name and exact labels."""
    for line in text.splitlines():
        series, _, value = line.rpartition(" ")
        metric, _, rest = series.partition("{")
        if metric == name and dict(re.findall(r'(\w+)="([^"]*)"', rest)) == labels:
            return float(value)
    raise AssertionError(f"no sample {name}{labels} in:\n{text}")


def work(api: Api) -> None:
    api.enqueue({"type": "echo"})
    api.enqueue({"type": "fail", "payload": {"always": True}, "max_attempts": 1})
    api.enqueue({"type": "fail", "payload": {"times": 1}, "max_attempts": 3, "queue": "q2"})
    cancelled = api.enqueue({"type": "echo", "delay": 600})
    api.post(f"/jobs/{cancelled}/cancel")
    spool_app.app.handler_map["drain_due"](scheduled_event(spool_app.app), context("drain_due"))


def test_counters_gauges_and_histograms(api: Api) -> None:
    work(api)
    text = scrape(api)
    assert sample(text, "spool_jobs_enqueued_total", queue="default", type="echo") == 2
    assert sample(text, "spool_jobs_enqueued_total", queue="default", type="fail") == 1
    assert sample(text, "spool_jobs_succeeded_total", queue="default", type="echo") == 1
    assert sample(text, "spool_jobs_failed_total", queue="default", type="fail") == 1
    assert sample(text, "spool_jobs_dead_total", queue="default", type="fail") == 1
    assert sample(text, "spool_jobs_failed_total", queue="q2", type="fail") == 1
    assert sample(text, "spool_jobs_retried_total", queue="q2", type="fail") == 1
    assert sample(text, "spool_jobs_cancelled_total", queue="default", type="echo") == 1
    assert sample(text, "spool_jobs", queue="default", state="dead") == 1
    assert sample(text, "spool_jobs", queue="default", state="cancelled") == 1
    # The retry's backoff is jittered, so the same drain may already have re-run it.
    assert (
        sample(text, "spool_jobs", queue="q2", state="retrying")
        + sample(text, "spool_jobs", queue="q2", state="succeeded")
        == 1
    )
    assert sample(text, "spool_jobs", queue="q2", state="running") == 0
    assert (
        sample(
            text,
            "spool_job_run_duration_seconds_count",
            queue="default",
            type="echo",
            outcome="succeeded",
        )
        == 1
    )
    assert sample(text, "spool_job_queue_wait_seconds_count", queue="default", type="fail") == 1


def promtool() -> str:
    found = shutil.which("promtool")
    if found:
        return found
    if os.environ.get("CI") == "true":
        pytest.fail("promtool is missing in CI: .ci/run installs the Debian package prometheus")
    pytest.skip("promtool not installed (apt-get install prometheus); CI runs this")


def test_exposition_passes_promtool(api: Api) -> None:
    tool = promtool()
    work(api)
    text = scrape(api)
    promtool_check(tool, text)
    assert "spool_job_run_duration_seconds_bucket" in text  # histograms were checked too


def promtool_check(tool: str, text: str) -> None:
    check = subprocess.run(
        [tool, "check", "metrics"], input=text.encode(), capture_output=True, timeout=60
    )
    assert check.returncode == 0, check.stdout.decode() + check.stderr.decode()


def test_totals_are_system_wide_across_processes(tmp_path) -> None:
    """Work done by one process (the spool CLI) shows in another's /metrics."""
    db = tmp_path / "shared.db"
    env = {
        **os.environ,
        "SPOOL_STORE_URL": f"sqlite:///{db}",
        "SPOOL_API_KEYS": API_KEYS,
        "SPOOL_HANDLERS": DEMO,
        "PYTHONPATH": str(ROOT),
    }
    cli = [sys.executable, "-m", "local.cli"]
    subprocess.run(
        [*cli, "enqueue", "echo", "--count", "4", "--tenant", TENANT_A],
        env=env,
        cwd=ROOT,
        check=True,
        timeout=60,
        capture_output=True,
    )
    subprocess.run(
        [*cli, "enqueue", "fail", "--payload", '{"always": true}', "--max-attempts", "1"],
        env=env,
        cwd=ROOT,
        check=True,
        timeout=60,
        capture_output=True,
    )
    subprocess.run(
        [*cli, "worker", "--burst", "--quiet"],
        env=env,
        cwd=ROOT,
        check=True,
        timeout=120,
        capture_output=True,
    )

    with installed(metrics_settings(tmp_path, store_url=f"sqlite:///{db}")) as rt:
        with Client(spool_app.app, stage_name="local") as client:
            text = scrape(Api(client))
        assert rt.store.counts()[("default", JobState.SUCCEEDED)] == 4
    assert sample(text, "spool_jobs_enqueued_total", queue="default", type="echo") == 4
    assert sample(text, "spool_jobs_succeeded_total", queue="default", type="echo") == 4
    assert sample(text, "spool_jobs_dead_total", queue="default", type="fail") == 1
    assert sample(text, "spool_jobs", queue="default", state="succeeded") == 4
    # This process ran nothing, so its own timings are empty.
    assert "spool_job_run_duration_seconds_count" not in text


# -- who may read /metrics -------------------------------------------------------


def test_a_tenant_key_is_refused_and_sees_no_queue_names(api: Api) -> None:
    api.enqueue({"type": "echo", "queue": "acme-payroll-secret"})
    for key in (KEY_A, KEY_B):
        reply = api.get("/metrics", key=key)
        assert reply.status == 403 and reply.error_code == "forbidden"
        assert "operator key" in reply.json["error"]["message"]
        assert b"acme-payroll-secret" not in reply.body and b"spool_jobs" not in reply.body
    for no_key in (None, "not-a-key"):
        reply = api.get("/metrics", key=no_key)
        assert reply.status == 401 and b"acme-payroll-secret" not in reply.body
        assert reply.header("WWW-Authenticate") == 'ApiKey header="X-API-Key"'
    assert 'queue="acme-payroll-secret"' in scrape(api)
    # Prometheus sends its credentials as a bearer token.
    bearer = api.get("/metrics", key=None, headers={"Authorization": f"Bearer {OPERATOR_KEY}"})
    assert bearer.status == 200 and b'queue="acme-payroll-secret"' in bearer.body


def test_metrics_public_is_the_operators_choice(tmp_path: Path) -> None:
    with (
        installed(metrics_settings(tmp_path, metrics_public=True)),
        Client(spool_app.app, stage_name="local") as client,
    ):
        api = Api(client)
        api.enqueue({"type": "echo", "queue": "shown-to-all"})
        for key in (None, KEY_B):
            reply = api.get("/metrics", key=key)
            assert reply.status == 200 and b'queue="shown-to-all"' in reply.body


# -- a bounded set of queue labels ---------------------------------------------------


def series(text: str) -> list[str]:
    return [line for line in text.splitlines() if line and not line.startswith("#")]


def queue_labels(text: str, family: str) -> set[str]:
    return {
        m
        for line in series(text)
        if line.startswith(family + "{")
        for m in re.findall(r'queue="([^"]*)"', line)
    }


def total(text: str, name: str) -> float:
    """The sum of every sample of one metric name, whatever its labels."""
    return sum(
        float(line.rpartition(" ")[2])
        for line in series(text)
        if line.partition("{")[0].partition(" ")[0] == name
    )


def test_300_queue_names_fold_into_a_bounded_exposition(api: Api) -> None:
    """One tenant making up 300 queue names grows nothing past the cap (50 + _other)."""
    for _ in range(5):
        api.enqueue({"type": "echo"})  # the busiest queue: kept whatever names sort first
    names = [f"q{i:03d}" for i in range(300)]
    for start in range(0, 300, 100):
        batch = [{"type": "echo", "queue": q} for q in names[start : start + 100]]
        assert api.post("/enqueue", {"jobs": batch}).status == 201
    spool_app.app.handler_map["drain_due"](scheduled_event(spool_app.app), context("drain_due"))
    text = scrape(api)

    kept = {"default", *names[:50]}  # the handlers' queue, then the 50 busiest by name
    for family in ("spool_jobs_enqueued_total", "spool_jobs_succeeded_total", "spool_jobs"):
        assert queue_labels(text, family) == kept | {OTHER}, family
    for family in ("spool_job_run_duration_seconds_count", "spool_job_queue_wait_seconds_count"):
        # First-seen in this process: "default", and one tenant names at most 10 of 50.
        assert len(queue_labels(text, family)) == 12, family
    # Folded, never dropped: every total still adds up to the 305 jobs.
    assert sample(text, "spool_jobs_enqueued_total", queue=OTHER, type="echo") == 250
    assert sample(text, "spool_jobs", queue=OTHER, state="succeeded") == 250
    assert sample(text, "spool_jobs_enqueued_total", queue="default", type="echo") == 5
    for name in (
        "spool_jobs_enqueued_total",
        "spool_jobs_succeeded_total",
        "spool_jobs",
        "spool_job_run_duration_seconds_count",
        "spool_job_queue_wait_seconds_count",
    ):
        assert total(text, name) == 305, name
    # 6 counters + 6 states + the oldest-due age per queue label, and three
    # 15/12/15-bucket histograms: bounded by the cap, not by the 300 names
    # (unbounded, this was 14,000 lines).
    assert len(series(text)) < 52 * (6 + 6 + 1 + 19 + 16 + 19) + 10
    assert len(queue_labels(text, "spool_queue_oldest_due_age_seconds")) == 52
    assert len(queue_labels(text, "spool_job_end_to_end_seconds_count")) == 12
    tool = shutil.which("promtool")
    if tool:
        promtool_check(tool, text)


# -- the label rule, on a store and a worker of its own ----------------------------------


@pytest.fixture
def store(tmp_path: Path) -> Iterator[JobStore]:
    opened = open_store(f"sqlite:///{tmp_path}/labels.db", FakeClock())
    try:
        yield opened
    finally:
        opened.close()


def run(store: JobStore, metrics: Metrics, queues: dict[str, int]) -> str:
    """Add `n` echo jobs to each queue, run them all, and read the exposition."""
    registry.load([DEMO])
    clock = store.clock
    assert isinstance(clock, FakeClock)
    store.add([new_job(clock, queue=q) for q, n in queues.items() for _ in range(n)])
    worker = Worker(store, registry, WorkerConfig(concurrency=2), middleware=(metrics.middleware,))
    try:
        worker.drain()
    finally:
        worker.close()
    return metrics.exposition().decode()


def test_declared_queues_are_the_only_labels(store: JobStore) -> None:
    metrics = Metrics(store, Settings(extra={"SPOOL_METRICS_QUEUES": f"emails,reports,{OTHER}"}))
    text = run(store, metrics, {"emails": 3, "reports": 1, "made-up-1": 2, "made-up-2": 4})
    for family in (
        "spool_jobs_enqueued_total",
        "spool_jobs",
        "spool_job_run_duration_seconds_count",
    ):
        assert queue_labels(text, family) == {"emails", "reports", OTHER}, family
    assert sample(text, "spool_jobs_enqueued_total", queue="emails", type="echo") == 3
    assert sample(text, "spool_jobs_enqueued_total", queue=OTHER, type="echo") == 6
    assert sample(text, "spool_jobs", queue=OTHER, state="succeeded") == 6
    assert "made-up" not in text


def test_a_worker_serving_some_queues_names_the_same_queues_as_the_api(store: JobStore) -> None:
    """Was: SPOOL_QUEUES, which picks the queues a worker claims from, also picked its
    labels, so a worker given SPOOL_QUEUES=emails reported `reports` as `_other` while
    the API named it. Prometheus then held the same jobs under two labels: the
    dashboard's `sum(max by (queue, state) (spool_jobs))` counted them twice, and the
    backlog alert fired for `_other` as well. Every process must name the same queues
    in the system-wide families, whatever queues it serves."""
    clock = store.clock
    assert isinstance(clock, FakeClock)
    store.add([new_job(clock, queue="emails") for _ in range(3)])
    store.add([new_job(clock, queue="reports") for _ in range(2)])
    clock.advance(400)
    api = Metrics(store, Settings()).exposition().decode()
    worker = Metrics(store, Settings(queues=("emails",))).exposition().decode()
    for family in ("spool_jobs", "spool_jobs_enqueued_total", "spool_queue_oldest_due_age_seconds"):
        assert queue_labels(worker, family) == queue_labels(api, family), family
    # The dashboard's "Waiting jobs": one copy of each (queue, state) series, summed.
    copies: dict[str, float] = {}
    for text in (api, worker):
        for line in series(text):
            if line.startswith("spool_jobs{") and 'state="queued"' in line:
                labels, _, value = line.rpartition(" ")
                copies[labels] = max(copies.get(labels, 0.0), float(value))
    assert sum(copies.values()) == 5
    # The backlog alert: only the queues that wait.
    aged = {
        queue
        for text in (api, worker)
        for queue in queue_labels(text, "spool_queue_oldest_due_age_seconds")
        if sample(text, "spool_queue_oldest_due_age_seconds", queue=queue) > 300
    }
    assert aged == {"emails", "reports"}


def test_declared_metric_queues_are_the_same_labels_in_every_process(store: JobStore) -> None:
    """SPOOL_METRICS_QUEUES (not SPOOL_QUEUES) pins the label set, so a worker serving one
    queue and the API given the same list report the same series."""
    clock = store.clock
    assert isinstance(clock, FakeClock)
    store.add([new_job(clock, queue=q) for q in ("emails", "reports", "made-up")])
    pinned = {"SPOOL_METRICS_QUEUES": "emails,reports"}
    api = Metrics(store, Settings(extra=pinned)).exposition().decode()
    worker = Metrics(store, Settings(queues=("emails",), extra=pinned)).exposition().decode()
    for text in (api, worker):
        assert queue_labels(text, "spool_jobs") == {"emails", "reports", OTHER}
        assert sample(text, "spool_jobs", queue="reports", state="queued") == 1


@pytest.mark.parametrize("value", [",", "no spaces allowed", "x" * 65])
def test_a_bad_metric_queue_list_is_refused_naming_the_setting(store: JobStore, value: str) -> None:
    with pytest.raises(ValueError, match="SPOOL_METRICS_QUEUES"):
        Metrics(store, Settings(extra={"SPOOL_METRICS_QUEUES": value}))


def test_the_cap_keeps_the_busiest_and_a_queue_named_other_folds(store: JobStore) -> None:
    metrics = Metrics(store, Settings(extra={"SPOOL_METRICS_MAX_QUEUES": "2"}))
    # "_other" is the busiest, yet never a label of its own: it would collide.
    text = run(store, metrics, {OTHER: 9, "aaa": 1, "big": 5, "mid": 3, "zzz": 1})
    assert queue_labels(text, "spool_jobs_enqueued_total") == {"big", "mid", OTHER}
    assert sample(text, "spool_jobs_enqueued_total", queue=OTHER, type="echo") == 11
    assert sample(text, "spool_jobs", queue=OTHER, state="succeeded") == 11
    assert total(text, "spool_jobs_enqueued_total") == 19
    assert total(text, "spool_job_run_duration_seconds_count") == 19
    # First-seen timings: one tenant names at most a fifth of the cap, and at least one.
    assert len(queue_labels(text, "spool_job_run_duration_seconds_count")) == 2
    tool = shutil.which("promtool")
    if tool:
        promtool_check(tool, text)  # no series written twice


def test_one_tenants_made_up_queues_leave_other_tenants_and_the_handlers_queues_named(
    store: JobStore,
) -> None:
    """Was: just after a restart one batch of 50 jobs in 50 made-up queues took every
    timing label for the life of the process; every other tenant's queues read
    `_other`. A handler's own queue is kept besides the cap."""
    metrics = Metrics(store, Settings(), queues=("emails",))
    clock = store.clock
    assert isinstance(clock, FakeClock)
    junk = [new_job(clock, queue=f"junk{n:02d}", tenant="mallory") for n in range(50)]
    store.add(junk)
    run(store, metrics, {})  # mallory's 50 run first
    store.add([new_job(clock, queue="billing", tenant="acme")])
    store.add([new_job(clock, queue="emails", tenant="acme")])
    text = run(store, metrics, {})
    runs = "spool_job_run_duration_seconds_count"
    timed = queue_labels(text, runs)
    assert {"billing", "emails"} <= timed
    assert len(timed - {"billing", "emails", OTHER}) == 10  # mallory's share: 50 // 5
    assert sample(text, runs, queue=OTHER, type="echo", outcome="succeeded") == 40


def test_busiest_means_most_jobs_enqueued_not_most_failures(store: JobStore) -> None:
    metrics = Metrics(store, Settings(extra={"SPOOL_METRICS_MAX_QUEUES": "1"}))
    clock = store.clock
    assert isinstance(clock, FakeClock)
    # 3 jobs that fail and retry (9 counted events) against 4 that succeed (8 events).
    store.add([new_job(clock, "fail", payload={"always": True}, queue="flaky") for _ in range(3)])
    text = run(store, metrics, {"steady": 4})
    assert queue_labels(text, "spool_jobs_enqueued_total") == {"steady", OTHER}
    assert sample(text, "spool_jobs_retried_total", queue=OTHER, type="fail") == 3


def test_a_cap_of_zero_folds_every_queue(store: JobStore) -> None:
    metrics = Metrics(store, Settings(extra={"SPOOL_METRICS_MAX_QUEUES": "0"}))
    text = run(store, metrics, {"a": 1, "b": 2})
    assert queue_labels(text, "spool_jobs") == {OTHER}
    assert queue_labels(text, "spool_job_queue_wait_seconds_count") == {OTHER}
    assert sample(text, "spool_jobs_succeeded_total", queue=OTHER, type="echo") == 3


@pytest.mark.parametrize("value", ["many", "-1", "2.5", "10001"])
def test_a_bad_cap_is_refused_naming_the_setting(store: JobStore, value: str) -> None:
    with pytest.raises(ValueError, match="SPOOL_METRICS_MAX_QUEUES"):
        Metrics(store, Settings(extra={"SPOOL_METRICS_MAX_QUEUES": value}))


class _Gateway(http.server.BaseHTTPRequestHandler):
    bodies: list[bytes] = []

    def do_PUT(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        _Gateway.bodies.append(self.rfile.read(length))
        self.send_response(202)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def test_the_pushgateway_gets_the_folded_timings(store: JobStore) -> None:
    metrics = Metrics(store, Settings(extra={"SPOOL_METRICS_MAX_QUEUES": "1"}))
    run(store, metrics, {f"tenant-made-{i}": 1 for i in range(20)})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Gateway)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    _Gateway.bodies = []
    try:
        assert metrics.push(f"http://127.0.0.1:{server.server_address[1]}")
    finally:
        server.shutdown()
        server.server_close()
    (body,) = _Gateway.bodies
    text = body.decode()
    assert len(queue_labels(text, "spool_job_run_duration_seconds_count")) == 2  # one + _other
    assert (
        sample(
            text,
            "spool_job_run_duration_seconds_count",
            queue=OTHER,
            type="echo",
            outcome="succeeded",
        )
        == 19
    )
    assert total(text, "spool_job_queue_wait_seconds_count") == 20


class _Dribbling(http.server.BaseHTTPRequestHandler):
    """A gateway that answers one byte at a time, slower than any read timeout notices."""

    release = threading.Event()

    def do_PUT(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        for byte in b"HTTP/1.1 202 Accepted\r\nContent-Length: 0\r\n\r\n":
            if _Dribbling.release.wait(0.2):
                return
            self.wfile.write(bytes([byte]))
            self.wfile.flush()

    def log_message(self, *args: object) -> None:
        pass


def test_a_push_to_a_gateway_that_dribbles_gives_up_at_its_timeout(
    store: JobStore, caplog: pytest.LogCaptureFixture
) -> None:
    """push_to_gateway's timeout bounds each read: a byte every 0.2 s (every 2 s in the
    chaos run) never tripped it, and `spool worker`'s exit push hung after SIGTERM."""
    metrics = Metrics(store, Settings())
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Dribbling)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    _Dribbling.release.clear()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        began = time.monotonic()
        with caplog.at_level(logging.WARNING, logger="spool"):
            assert metrics.push(url, timeout=1.0) is False
            assert time.monotonic() - began < 3.0
            # While that one is still stuck, the next is skipped, not stacked.
            assert metrics.push(url, timeout=1.0) is False
        said = [r.getMessage() for r in caplog.records]
        assert f"push to {url} failed: no answer within 1 s" in said
        assert f"push to {url} skipped: the previous push has not finished" in said
    finally:
        _Dribbling.release.set()
        server.shutdown()
        server.server_close()


# -- what people alert on: the oldest due job, live workers, end-to-end latency ---------


@pytest.fixture(params=["memory", "sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def any_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[JobStore]:
    from contextlib import nullcontext

    from tests.pg_support import fresh_schema

    urls = {"memory": "memory://", "sqlite": f"sqlite:///{tmp_path}/observed.db"}
    with fresh_schema() if request.param == "postgres" else nullcontext(urls[request.param]) as url:
        opened = open_store(url, FakeClock())
        try:
            yield opened
        finally:
            opened.close()


def fake_clock(store: JobStore) -> FakeClock:
    clock = store.clock
    assert isinstance(clock, FakeClock)
    return clock


def test_oldest_due_age_per_queue_label(any_store: JobStore) -> None:
    """The age of the oldest due, waiting job: per queue, folded queues take the oldest,
    and a queue with nothing due (only future or finished jobs) reports 0, not nothing."""
    clock = fake_clock(any_store)
    metrics = Metrics(any_store, Settings(extra={"SPOOL_METRICS_MAX_QUEUES": "2"}))
    any_store.add([new_job(clock, queue="emails") for _ in range(3)])
    any_store.add([new_job(clock, queue="reports"), new_job(clock, queue="reports")])
    clock.advance(100)
    any_store.add([new_job(clock, queue="rare-a"), new_job(clock, queue="emails")])
    any_store.add([new_job(clock, queue="later", delay=3600)])
    clock.advance(20)
    any_store.add([new_job(clock, queue="rare-b")])
    clock.advance(5)
    text = metrics.exposition().decode()
    age = "spool_queue_oldest_due_age_seconds"
    assert sample(text, age, queue="emails") == 125  # its oldest, not its newest
    assert sample(text, age, queue="reports") == 125
    # rare-a (25 s), rare-b (5 s) and later (not due) fold: the oldest of them.
    assert sample(text, age, queue=OTHER) == 25
    assert queue_labels(text, age) == {"emails", "reports", OTHER}

    # Once the waiting jobs ran, every label still has a series, at 0.
    worker = Worker(any_store, registry, WorkerConfig(concurrency=2))
    registry.load([DEMO])
    try:
        worker.drain()
    finally:
        worker.close()
    text = metrics.exposition().decode()
    for queue in ("emails", "reports", OTHER):
        assert sample(text, age, queue=queue) == 0


def test_a_queue_whose_jobs_were_all_purged_reads_zero_in_every_state(
    any_store: JobStore,
) -> None:
    clock = fake_clock(any_store)
    metrics = Metrics(any_store, Settings())
    any_store.add([new_job(clock, queue="emails") for _ in range(2)])
    worker = Worker(any_store, registry, WorkerConfig(concurrency=2))
    registry.load([DEMO])
    try:
        worker.drain()
    finally:
        worker.close()
    clock.advance(10)
    assert any_store.purge(clock.now()) == 2
    text = metrics.exposition().decode()
    for state in JobState:
        assert sample(text, "spool_jobs", queue="emails", state=state.value) == 0
    assert sample(text, "spool_jobs_enqueued_total", queue="emails", type="echo") == 2


def test_live_workers_and_a_bounded_set_of_heartbeats(any_store: JobStore) -> None:
    clock = fake_clock(any_store)
    settings = Settings(extra={"SPOOL_METRICS_MAX_WORKERS": "2", "SPOOL_WORKER_LIVE_SECONDS": "30"})
    metrics = Metrics(any_store, settings)
    started = clock.now()
    any_store.beat("gone:1", None, started)
    clock.advance(40)  # gone:1 is now 40 s silent: not live
    for name in ("a:1", "b:2", "c:3"):
        any_store.beat(name, ("emails",), started)
        clock.advance(1)
    text = metrics.exposition().decode()
    assert sample(text, "spool_workers_live") == 3
    beats = {
        m: float(line.rpartition(" ")[2])
        for line in series(text)
        if line.startswith("spool_worker_last_heartbeat_timestamp_seconds{")
        for m in re.findall(r'worker="([^"]*)"', line)
    }
    # The cap keeps the two most recent beats; the count still has all three.
    assert set(beats) == {"b:2", "c:3"}
    assert beats["c:3"] == (started.timestamp() + 42)
    clock.advance(30)
    text = metrics.exposition().decode()
    assert sample(text, "spool_workers_live") == 0
    assert "spool_worker_last_heartbeat_timestamp_seconds{" not in text


def test_end_to_end_covers_waiting_and_retries_and_only_final_outcomes(
    any_store: JobStore,
) -> None:
    clock = fake_clock(any_store)
    metrics = Metrics(any_store, Settings())
    registry.load([DEMO])
    any_store.add([new_job(clock, queue="q", max_attempts=3)])
    any_store.add([new_job(clock, "fail", payload={"times": 1}, queue="q", max_attempts=3)])
    any_store.add([new_job(clock, "fail", payload={"always": True}, queue="q", max_attempts=1)])
    clock.advance(20)  # 20 s waiting before anything runs
    worker = Worker(
        any_store, registry, WorkerConfig(concurrency=2), middleware=(metrics.middleware,)
    )
    try:
        worker.drain()
        clock.advance(600)  # past any backoff: the retried job runs again and succeeds
        worker.drain()
    finally:
        worker.close()
    text = metrics.exposition().decode()
    e2e = "spool_job_end_to_end_seconds"
    assert sample(text, f"{e2e}_count", queue="q", type="echo", outcome="succeeded") == 1
    assert sample(text, f"{e2e}_sum", queue="q", type="echo", outcome="succeeded") == 20
    assert sample(text, f"{e2e}_count", queue="q", type="fail", outcome="dead") == 1
    # The retried job: one observation (its final success), not one per attempt,
    # and it spans the 600 s of backoff.
    assert sample(text, f"{e2e}_count", queue="q", type="fail", outcome="succeeded") == 1
    assert sample(text, f"{e2e}_sum", queue="q", type="fail", outcome="succeeded") == 620
    assert (
        sample(text, f"{e2e}_bucket", queue="q", type="fail", outcome="succeeded", le="300.0") == 0
    )
    assert 'outcome="retrying"' not in "\n".join(
        line for line in series(text) if line.startswith(e2e)
    )


class _Counting:
    """A store proxy that counts the calls made through it."""

    def __init__(self, store: JobStore) -> None:
        self._store = store
        self.calls: dict[str, int] = {}

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._store, name)
        if not callable(attr):
            return attr

        def counted(*args: Any, **kwargs: Any) -> Any:
            self.calls[name] = self.calls.get(name, 0) + 1
            return attr(*args, **kwargs)

        return counted


def test_one_store_read_of_each_kind_per_scrape(any_store: JobStore) -> None:
    clock = fake_clock(any_store)
    any_store.add([new_job(clock, queue=q) for q in ("a", "b", "c")])
    any_store.beat("w:1", None, clock.now())
    counting = _Counting(any_store)
    metrics = Metrics(counting, Settings())
    metrics.exposition()
    # The counters and counts come folded (queue_totals), never as a row per queue name;
    # the oldest due jobs by one read: of the named queues where the store can answer
    # just that (oldest_due_named: memory, Redis), else of every queue.
    calls = dict(counting.calls)
    oldest = calls.pop("oldest_due_named", 0) + calls.pop("oldest_due", 0)
    assert oldest == 1
    reads = ("queue_totals", "live_workers", "webhook_counts")
    assert calls == dict.fromkeys(reads, 1)


@pytest.mark.parametrize("name", ["SPOOL_METRICS_MAX_WORKERS", "SPOOL_WORKER_LIVE_SECONDS"])
@pytest.mark.parametrize("value", ["many", "-1", "0.5e6"])
def test_bad_worker_metric_settings_are_refused_naming_them(
    store: JobStore, name: str, value: str
) -> None:
    with pytest.raises(ValueError, match=name):
        Metrics(store, Settings(extra={name: value}))


# -- `spool worker` reports: its metrics port, heartbeats, and the Pushgateway ------------


def _get(url: str, method: str = "GET") -> tuple[int, str]:
    import urllib.error
    import urllib.request

    request = urllib.request.Request(url, method=method)
    try:
        with urllib.request.urlopen(request, timeout=10) as reply:
            return reply.status, reply.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


class _BrokenStore:
    """A store whose reads fail, as when the database is down."""

    def __init__(self, store: JobStore) -> None:
        self._store = store

    def __getattr__(self, name: str) -> Any:
        if name in ("counters", "counts", "oldest_due", "live_workers"):

            def fail(*args: Any, **kwargs: Any) -> Any:
                raise ConnectionError("postgresql://spool:hunter2@db/spool is down")

            return fail
        return getattr(self._store, name)


def test_the_worker_metrics_server_serves_metrics_only(store: JobStore) -> None:
    from chalicelib.api.metrics import CONTENT_TYPE
    from local.metrics_http import MetricsServer

    store.add([new_job(fake_clock(store), queue="emails")])
    metrics = Metrics(store, Settings())
    broken = Metrics(_BrokenStore(store), Settings())
    servers = [MetricsServer("127.0.0.1", 0, m.exposition, CONTENT_TYPE) for m in (metrics, broken)]
    for server in servers:
        server.start()
    try:
        good, bad = (s.url for s in servers)
        status, text = _get(good)
        assert status == 200
        assert sample(text, "spool_jobs", queue="emails", state="queued") == 1
        assert sample(text, "spool_queue_oldest_due_age_seconds", queue="emails") == 0
        assert _get(good.replace("/metrics", "/"))[0] == 404
        assert _get(good.replace("/metrics", "/metricsx"))[0] == 404
        assert _get(good, "POST")[0] == 405
        status, text = _get(bad)  # a failed scrape, and no secret in it
        assert status == 503 and "ConnectionError" in text and "hunter2" not in text
    finally:
        for server in servers:
            server.stop()


def test_the_pusher_pushes_once_more_when_it_stops() -> None:
    from local.worker_metrics import Pusher

    pushes: list[int] = []

    def push() -> bool:
        pushes.append(1)
        return True

    pusher = Pusher(push, interval=3600)
    pusher.start()
    assert pushes == []
    assert pusher.stop() is True
    assert pushes == [1]


@pytest.mark.parametrize("reporting", ["worker", "serve"])
def test_a_process_both_scraped_and_pushing_is_told_its_timings_count_twice(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, reporting: str
) -> None:
    """Was: `spool worker --metrics-port` (or `spool serve`, whose /metrics reports its own
    worker) with SPOOL_PUSHGATEWAY_URL set sent the same histograms to Prometheus twice,
    scraped and pushed, and every sum over them counted each attempt twice, silently."""
    from local.serve import IntervalPush
    from local.worker_metrics import WorkerMetrics

    settings = metrics_settings(tmp_path, pushgateway_url="http://127.0.0.1:9")
    with installed(settings) as runtime, caplog.at_level(logging.WARNING):
        if reporting == "worker":
            built = WorkerMetrics(runtime, "127.0.0.1", 0)
            assert built.server is not None
            built.server.stop()
        else:
            IntervalPush(object(), runtime)
        warned = [r.getMessage() for r in caplog.records if "twice" in r.getMessage()]
        assert len(warned) == 1, caplog.text
        assert "http://127.0.0.1:9" in warned[0]
        caplog.clear()
        if reporting == "worker":  # pushing alone, or scraped alone: nothing to say
            WorkerMetrics(runtime, "127.0.0.1", None)
            assert "twice" not in caplog.text


def _gateway() -> tuple[http.server.ThreadingHTTPServer, str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Gateway)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    _Gateway.bodies = []
    return server, f"http://127.0.0.1:{server.server_address[1]}"


def _lines(stream: Any) -> Any:
    """Lines of a child's stream, read on a thread so a test can wait with a bound."""
    import queue as queue_module

    lines: queue_module.Queue[str] = queue_module.Queue()

    def pump() -> None:
        for line in stream:
            lines.put(line)

    threading.Thread(target=pump, daemon=True).start()
    return lines


def _drained(lines: Any) -> list[str]:
    import queue as queue_module

    out: list[str] = []
    while True:
        try:
            out.append(lines.get_nowait())
        except queue_module.Empty:
            return out


def test_spool_worker_serves_metrics_beats_and_pushes_at_exit(tmp_path: Path) -> None:
    """`spool worker --metrics-port 0`: its port shows the system-wide families and its
    own timings, its heartbeat makes it live, and SIGTERM ends it with one last push."""
    import signal
    import time

    from tests.procs import guarded_env, stop

    db = tmp_path / "worker.db"
    seeded = open_store(f"sqlite:///{db}")
    registry.load([DEMO])
    try:
        now = FakeClock(seeded.clock.now())  # due now, by the worker's real clock
        seeded.add([new_job(now, queue="emails") for _ in range(3)])
    finally:
        seeded.close()
    gateway, gateway_url = _gateway()
    env = guarded_env(
        SPOOL_STORE_URL=f"sqlite:///{db}",
        SPOOL_HANDLERS=DEMO,
        SPOOL_PUSHGATEWAY_URL=gateway_url,
        SPOOL_PUSH_INTERVAL="3600",  # only the exit push, within this test
        PYTHONPATH=str(ROOT),
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "local.cli", "worker", "--metrics-port", "0"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None
        lines = _lines(proc.stderr)
        seen: list[str] = []
        url = None
        while url is None:
            seen.append(lines.get(timeout=60))
            found = re.search(r"metrics at (http://127\.0\.0\.1:\d+/metrics)", seen[-1])
            url = found.group(1) if found else None
        deadline = time.monotonic() + 90
        text = ""
        while time.monotonic() < deadline:
            status, text = _get(url)
            assert status == 200, text
            if 'spool_jobs_succeeded_total{queue="emails",type="echo"} 3.0' in text:
                break
            time.sleep(0.2)
        assert 'spool_jobs_succeeded_total{queue="emails",type="echo"} 3.0' in text, (
            text + "".join(seen) + "".join(_drained(lines))
        )
        assert sample(text, "spool_workers_live") == 1
        assert f":{proc.pid}:" in text  # its own heartbeat series, named host:pid:tag
        assert (
            sample(
                text,
                "spool_job_run_duration_seconds_count",
                queue="emails",
                type="echo",
                outcome="succeeded",
            )
            == 3
        )
        assert _Gateway.bodies == []  # the interval is an hour: nothing pushed yet
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    finally:
        stop(proc)
        gateway.shutdown()
        gateway.server_close()
    (body,) = _Gateway.bodies
    pushed = body.decode()
    assert sample(pushed, "spool_job_end_to_end_seconds_count", queue="emails", type="echo",
                  outcome="succeeded") == 3  # fmt: skip
    assert "spool_jobs_succeeded_total" not in pushed  # system-wide totals are scraped


def test_spool_worker_reports_a_busy_metrics_port_without_a_traceback(tmp_path: Path) -> None:
    import socket

    from tests.procs import guarded_env

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        out = subprocess.run(
            [sys.executable, "-m", "local.cli", "worker", "--metrics-port", str(port)],
            cwd=ROOT,
            env=guarded_env(SPOOL_STORE_URL=f"sqlite:///{tmp_path}/busy.db"),
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert out.returncode == 1, out.stderr
    assert f"cannot serve metrics on 127.0.0.1:{port}" in out.stderr
    assert "--metrics-port" in out.stderr and "Traceback" not in out.stderr


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["--metrics-port", "70000"], {}, "a port is 0 to 65535"),
        (["--metrics-port", "x"], {}, "is not a port number"),
        ([], {"SPOOL_PUSHGATEWAY_URL": "http://127.0.0.1:9", "SPOOL_PUSH_INTERVAL": "0"},
         "SPOOL_PUSH_INTERVAL"),
        (["--metrics-port", "0"], {"SPOOL_WORKER_LIVE_SECONDS": "soon"},
         "SPOOL_WORKER_LIVE_SECONDS"),
    ],
)  # fmt: skip
def test_spool_worker_refuses_bad_metric_options_before_running(
    tmp_path: Path, args: list[str], env: dict[str, str], message: str
) -> None:
    from tests.procs import guarded_env

    out = subprocess.run(
        [sys.executable, "-m", "local.cli", "worker", "--burst", *args],
        cwd=ROOT,
        env=guarded_env(SPOOL_STORE_URL=f"sqlite:///{tmp_path}/bad.db", **env),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2, out.stderr
    assert message in out.stderr and "Traceback" not in out.stderr

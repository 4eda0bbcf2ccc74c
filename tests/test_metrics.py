"""Prometheus metrics: system-wide totals, timings, and a valid exposition."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from chalice.test import Client

import app as spool_app
from chalicelib.models import JobState
from local.emulator import context, scheduled_event
from tests.apikit import API_KEYS, TENANT_A, Api, installed, settings_for

ROOT = Path(__file__).resolve().parents[1]


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
    text = api.get("/metrics").body.decode()
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
    text = api.get("/metrics").body
    check = subprocess.run([tool, "check", "metrics"], input=text, capture_output=True, timeout=60)
    assert check.returncode == 0, check.stdout.decode() + check.stderr.decode()
    assert b"spool_job_run_duration_seconds_bucket" in text  # histograms were checked too


def test_totals_are_system_wide_across_processes(tmp_path) -> None:
    """Work done by one process (the spool CLI) shows in another's /metrics."""
    db = tmp_path / "shared.db"
    env = {
        **os.environ,
        "SPOOL_STORE_URL": f"sqlite:///{db}",
        "SPOOL_API_KEYS": API_KEYS,
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

    with installed(settings_for(tmp_path, store_url=f"sqlite:///{db}")) as rt:
        with Client(spool_app.app, stage_name="local") as client:
            text = Api(client).get("/metrics").body.decode()
        assert rt.store.counts()[("default", JobState.SUCCEEDED)] == 4
    assert sample(text, "spool_jobs_enqueued_total", queue="default", type="echo") == 4
    assert sample(text, "spool_jobs_succeeded_total", queue="default", type="echo") == 4
    assert sample(text, "spool_jobs_dead_total", queue="default", type="fail") == 1
    assert sample(text, "spool_jobs", queue="default", state="succeeded") == 4
    # This process ran nothing, so its own timings are empty.
    assert "spool_job_run_duration_seconds_count" not in text

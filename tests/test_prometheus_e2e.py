"""A real Prometheus scraping a self-hosted Spool: `spool serve` and `spool worker`.

Prometheus (Debian package `prometheus`) scrapes the API's /metrics with the
operator key as a bearer token (read from a credentials file, as in
deploy/prometheus.yml) and the worker's --metrics-port, every second, and loads
the shipped alert rules. The test asks Prometheus's HTTP API, not Spool, for the
job counters, the histograms, the oldest-job age and the live workers; then runs
every expression of the dashboard and the rules through it. Fails in CI when
prometheus is missing, skips elsewhere.
"""

from __future__ import annotations

import json
import os
import queue as queue_module
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.procs import guarded_env, stop

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "deploy" / "prometheus" / "alerts.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "spool.json"
DEMO = "chalicelib.builtin.demo"
TENANT_KEY = "tenant-key-2718281828"
OPERATOR_KEY = "operator-key-1618033988"
WAIT = 90.0  # seconds for any one condition to show in Prometheus


def prometheus_binary() -> str:
    found = shutil.which("prometheus")
    if found:
        return found
    if os.environ.get("CI") or os.environ.get("SPOOL_REQUIRE_POSTGRES"):
        pytest.fail("prometheus is missing (Debian package prometheus); .ci/run installs it")
    pytest.skip("prometheus is not installed (apt-get install prometheus); CI runs this")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def lines_of(stream: Any) -> queue_module.Queue[str]:
    lines: queue_module.Queue[str] = queue_module.Queue()

    def pump() -> None:
        for line in stream:
            lines.put(line)

    threading.Thread(target=pump, daemon=True).start()
    return lines


def wait_for_line(lines: queue_module.Queue[str], pattern: str, what: str) -> re.Match[str]:
    seen: list[str] = []
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        try:
            seen.append(lines.get(timeout=1))
        except queue_module.Empty:
            continue
        found = re.search(pattern, seen[-1])
        if found:
            return found
    raise AssertionError(f"{what} never printed {pattern!r}:\n{''.join(seen)}")


def http(
    url: str, body: dict[str, Any] | None = None, headers: dict[str, str] | None = None
) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, headers=headers or {})
    if data is not None:
        request.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(request, timeout=10) as reply:
        return json.loads(reply.read())


class Prometheus:
    def __init__(self, url: str) -> None:
        self.url = url

    def query(self, expr: str) -> list[dict[str, Any]]:
        reply = http(f"{self.url}/api/v1/query?" + urllib.parse.urlencode({"query": expr}))
        assert reply["status"] == "success", reply
        result: list[dict[str, Any]] = reply["data"]["result"]
        return result

    def value(self, expr: str) -> float | None:
        """The single sample an expression answers, or None while it answers nothing."""
        result = self.query(expr)
        assert len(result) <= 1, result
        return float(result[0]["value"][1]) if result else None

    def wait(self, expr: str, accept: Callable[[float], bool], what: str) -> float:
        deadline = time.monotonic() + WAIT
        last: float | None = None
        while time.monotonic() < deadline:
            last = self.value(expr)
            if last is not None and accept(last):
                return last
            time.sleep(0.5)
        raise AssertionError(f"{what}: {expr} answered {last} for {WAIT:.0f} s")


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[tuple[str, Prometheus]]:
    """spool serve (API only), spool worker (queue `default` only) and Prometheus."""
    binary = prometheus_binary()
    db = tmp_path / "spool.db"
    env = guarded_env(
        SPOOL_STORE_URL=f"sqlite:///{db}",
        SPOOL_API_KEYS=f"{TENANT_KEY}=acme",
        SPOOL_METRICS_KEYS=f"{OPERATOR_KEY}=prometheus",
        SPOOL_HANDLERS=DEMO,
        PYTHONPATH=str(ROOT),
    )
    procs: list[subprocess.Popen[str]] = []

    def start(args: list[str], **extra: str) -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            args,
            cwd=tmp_path,
            env={**env, **extra},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        procs.append(proc)
        return proc

    try:
        # The schema first, so the API and the worker do not race to create it.
        cli = [sys.executable, "-m", "local.cli"]
        subprocess.run([*cli, "schedules"], cwd=tmp_path, env=env, check=True, timeout=60,
                       capture_output=True)  # fmt: skip
        api = start([*cli, "serve", "--no-worker", "--port", "0"])
        found = wait_for_line(lines_of(api.stdout), r"serving app\.py on (http://\S+)", "serve")
        api_url = found.group(1)

        worker_port = free_port()
        worker = start(
            [*cli, "worker", "--metrics-port", str(worker_port)],
            SPOOL_QUEUES="default",  # "backlog" is nobody's: its jobs wait
        )
        wait_for_line(lines_of(worker.stdout), r"metrics at http://", "worker")

        key_file = tmp_path / "metrics-key"
        key_file.write_text(OPERATOR_KEY)
        prom_port = free_port()
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(RULES)],
            "scrape_configs": [
                {
                    "job_name": "spool-api",
                    "metrics_path": "/metrics",
                    "authorization": {"type": "Bearer", "credentials_file": str(key_file)},
                    "static_configs": [{"targets": [api_url.removeprefix("http://")]}],
                },
                {
                    "job_name": "spool-worker",
                    "static_configs": [{"targets": [f"127.0.0.1:{worker_port}"]}],
                },
            ],
        }
        (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
        prom = start(
            [
                binary,
                f"--config.file={tmp_path / 'prometheus.yml'}",
                f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{prom_port}",
            ]
        )
        lines_of(prom.stdout)  # drain its log so it never blocks on a full pipe
        prometheus = Prometheus(f"http://127.0.0.1:{prom_port}")
        deadline = time.monotonic() + WAIT
        while True:
            try:
                urllib.request.urlopen(f"{prometheus.url}/-/ready", timeout=2).close()
                break
            except (urllib.error.URLError, ConnectionError):
                assert prom.poll() is None, "prometheus exited"
                assert time.monotonic() < deadline, "prometheus never became ready"
                time.sleep(0.2)
        yield api_url, prometheus
    finally:
        for proc in reversed(procs):
            stop(proc)


def test_prometheus_sees_every_spool_series(stack: tuple[str, Prometheus]) -> None:
    api_url, prom = stack
    tenant = {"X-API-Key": TENANT_KEY}
    for _ in range(3):
        http(f"{api_url}/enqueue", {"type": "echo"}, tenant)
    for _ in range(2):
        http(f"{api_url}/enqueue", {"type": "fail", "payload": {"always": True},
             "max_attempts": 1}, tenant)  # fmt: skip
    http(f"{api_url}/enqueue", {"type": "echo", "queue": "backlog"}, tenant)

    # Both targets are up: the API's with the bearer key, the worker's without.
    assert prom.wait('up{job="spool-api"}', lambda v: v == 1, "the API is scraped") == 1
    assert prom.wait('up{job="spool-worker"}', lambda v: v == 1, "the worker is scraped") == 1

    # The job counters, system-wide, from either process.
    for job in ("spool-api", "spool-worker"):
        selector = f'job="{job}", queue="default"'
        prom.wait(f'spool_jobs_succeeded_total{{{selector}, type="echo"}}', lambda v: v == 3,
                  f"{job}: echo jobs succeeded")  # fmt: skip
        prom.wait(f'spool_jobs_dead_total{{{selector}, type="fail"}}', lambda v: v == 2,
                  f"{job}: failing jobs dead")  # fmt: skip
    prom.wait('spool_jobs{job="spool-api", queue="default", state="dead"}', lambda v: v == 2,
              "dead jobs in the store")  # fmt: skip

    # The worker's own histograms.
    prom.wait(
        'spool_job_run_duration_seconds_count{job="spool-worker", queue="default", '
        'type="echo", outcome="succeeded"}',
        lambda v: v == 3,
        "run duration",
    )
    prom.wait(
        'spool_job_end_to_end_seconds_count{job="spool-worker", queue="default", '
        'type="fail", outcome="dead"}',
        lambda v: v == 2,
        "end-to-end latency",
    )
    prom.wait(
        'sum(spool_job_queue_wait_seconds_count{job="spool-worker"})',
        lambda v: v == 5,
        "queue wait",
    )
    buckets = 'spool_job_end_to_end_seconds_bucket{job="spool-worker"}'
    quantile = prom.value(f"histogram_quantile(0.5, sum by (le) ({buckets}))")
    assert quantile is not None and quantile > 0

    # The oldest-job age grows for the queue nobody serves; `default` is drained.
    first = prom.wait('spool_queue_oldest_due_age_seconds{job="spool-api", queue="backlog"}',
                      lambda v: v > 0, "backlog age")  # fmt: skip
    prom.wait('spool_queue_oldest_due_age_seconds{job="spool-api", queue="backlog"}',
              lambda v: v > first, "backlog age grows")  # fmt: skip
    assert prom.value('spool_queue_oldest_due_age_seconds{job="spool-api", queue="default"}') == 0
    # The worker serves only `default` (SPOOL_QUEUES), yet names `backlog` as the API
    # does: it used to fold it into _other, the same job under two labels.
    prom.wait('spool_queue_oldest_due_age_seconds{job="spool-worker", queue="backlog"}',
              lambda v: v > 0, "the worker's backlog age")  # fmt: skip
    assert prom.query('spool_queue_oldest_due_age_seconds{queue="_other"}') == []

    # The worker's heartbeat, read back from the store by the API.
    prom.wait('spool_workers_live{job="spool-api"}', lambda v: v == 1, "live workers")
    beat = prom.query('spool_worker_last_heartbeat_timestamp_seconds{job="spool-api"}')
    assert len(beat) == 1 and re.fullmatch(r".+:\d+:[0-9a-f]{6}", beat[0]["metric"]["worker"])
    assert abs(float(beat[0]["value"][1]) - time.time()) < 120


def test_every_dashboard_and_alert_expression_runs(stack: tuple[str, Prometheus]) -> None:
    """Every PromQL expression shipped is valid for this Prometheus and, once the
    series exist, answers something; the rules load and evaluate without error."""
    api_url, prom = stack
    http(f"{api_url}/enqueue", {"type": "echo"}, {"X-API-Key": TENANT_KEY})
    prom.wait('spool_jobs_succeeded_total{job="spool-worker", type="echo"}', lambda v: v == 1,
              "a job ran")  # fmt: skip
    board = json.loads(DASHBOARD.read_text())
    for panel in board["panels"]:
        for target in panel["targets"]:
            expr = target["expr"].replace("$queue", ".*").replace("$__rate_interval", "1m")
            prom.query(expr)  # status "success", or the assertion names it

    deadline = time.monotonic() + WAIT
    while True:
        groups = http(f"{prom.url}/api/v1/rules")["data"]["groups"]
        rules = [r for g in groups for r in g["rules"]]
        if rules and all(r.get("lastEvaluation", "").startswith("2") and
                         not r["lastEvaluation"].startswith("0001") for r in rules):  # fmt: skip
            break
        assert time.monotonic() < deadline, rules
        time.sleep(0.5)
    assert {r["name"] for r in rules} == {
        "SpoolQueueBacklogAge",
        "SpoolDeadLetterGrowth",
        "SpoolFailureRatio",
        "SpoolNoLiveWorkers",
    }
    for rule in rules:
        assert rule["health"] == "ok", rule
    # A live worker beats: once its beat is scraped, the no-live-workers alert is not
    # even pending (before the first scrape, `absent(...)` may have made it pending).
    prom.wait("max(spool_workers_live)", lambda v: v == 1, "live workers")
    deadline = time.monotonic() + WAIT
    while True:
        alerts = http(f"{prom.url}/api/v1/alerts")["data"]["alerts"]
        if all(a["labels"]["alertname"] != "SpoolNoLiveWorkers" for a in alerts):
            break
        assert time.monotonic() < deadline, alerts
        time.sleep(0.5)

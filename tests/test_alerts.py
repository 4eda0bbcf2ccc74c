"""The shipped alert rules and Grafana dashboard: valid, unit-tested, wired, and about
series Spool really exports.

promtool checks and unit-tests deploy/prometheus/alerts.yml (alerts.test.yml feeds
each system-wide series from two processes, as a real deployment does); a copy whose
`max by` became `sum by` must fail those tests, so they can tell. prometheus.yml loads
the rules from where compose mounts them. Every expression in the rules and the
dashboard names only metric families a live runtime's /metrics exposes.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.apikit import OPERATOR_KEY, Api

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
RULES = DEPLOY / "prometheus" / "alerts.yml"
RULE_TESTS = DEPLOY / "prometheus" / "alerts.test.yml"
DASHBOARD = DEPLOY / "grafana" / "spool.json"
ALERTS = {
    "SpoolQueueBacklogAge",
    "SpoolDeadLetterGrowth",
    "SpoolFailureRatio",
    "SpoolNoLiveWorkers",
}


def promtool() -> str:
    found = shutil.which("promtool")
    if found:
        return found
    if os.environ.get("CI") or os.environ.get("SPOOL_REQUIRE_POSTGRES"):
        pytest.fail("promtool is missing (Debian package prometheus); .ci/run installs it")
    pytest.skip("promtool is not installed (apt-get install prometheus); CI runs this")


def run(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(a) for a in args], capture_output=True, text=True, timeout=120, check=False, cwd=cwd
    )


def rules() -> list[dict[str, Any]]:
    return [r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]]


def dashboard_exprs() -> list[str]:
    board = json.loads(DASHBOARD.read_text())
    return [t["expr"] for p in board["panels"] for t in p["targets"]]


# -- the rules ---------------------------------------------------------------------


def test_the_rules_pass_promtool_check() -> None:
    result = run(promtool(), "check", "rules", RULES)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{len(ALERTS)} rules found" in result.stdout
    assert {r["alert"] for r in rules()} == ALERTS


def test_the_rules_pass_their_unit_tests() -> None:
    result = run(promtool(), "test", "rules", RULE_TESTS)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout
    tested = set(re.findall(r"alertname: (\w+)", RULE_TESTS.read_text()))
    assert tested == ALERTS, "every alert has a unit test"


@pytest.mark.parametrize(
    ("broken", "caught"),
    [
        # Summing the system-wide copies counts each job once per scraped process.
        ("max by (queue) (spool_queue_oldest", "sum by (queue) (spool_queue_oldest"),
        ("max by (queue, type) (increase(spool_jobs_dead", "sum by (queue, type) (increase("
         "spool_jobs_dead"),
        (") >= 5", ") >= 0"),  # the minimum volume of the failure ratio
        (" or absent(spool_workers_live)", ""),
        # _other's own series falls and jumps as queues move in and out of it.
        (
            'increase(spool_jobs_dead_total{queue!="_other"}[15m])',
            "increase(spool_jobs_dead_total[15m])",
        ),
        ("round(", "("),  # a folded death counted as 3.188
    ],
    ids=["backlog-sum", "dead-sum", "ratio-volume", "no-absent", "dead-other", "dead-round"],
)  # fmt: skip
def test_the_unit_tests_catch_a_broken_rule(tmp_path: Path, broken: str, caught: str) -> None:
    text = RULES.read_text()
    assert broken in text
    (tmp_path / "alerts.yml").write_text(text.replace(broken, caught))
    shutil.copy(RULE_TESTS, tmp_path / "alerts.test.yml")
    result = run(promtool(), "test", "rules", tmp_path / "alerts.test.yml")
    assert result.returncode != 0, result.stdout


def test_prometheus_loads_the_rules_compose_mounts(tmp_path: Path) -> None:
    """prometheus.yml's rule_files glob matches where compose puts alerts.yml, and the
    config with the rules in place passes `promtool check config`."""
    config = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())
    (pattern,) = config["rule_files"]
    prometheus = yaml.safe_load((DEPLOY / "compose.yaml").read_text())["services"]["prometheus"]
    sources = yaml.safe_load((DEPLOY / "compose.yaml").read_text())["configs"]
    mounted = {c["target"]: sources[c["source"]]["file"] for c in prometheus["configs"]}
    rule_targets = [t for t in mounted if fnmatch.fnmatch(t, pattern)]
    assert rule_targets, f"compose mounts nothing at {pattern}"
    for target in rule_targets:
        assert (DEPLOY / mounted[target]).resolve() == RULES

    rules_dir = tmp_path / "rules"
    rules_dir.mkdir()
    shutil.copy(RULES, rules_dir / "spool.yml")
    key = tmp_path / "metrics-key"
    key.write_text("example")
    text = (DEPLOY / "prometheus.yml").read_text()
    text = text.replace("/etc/prometheus/metrics-key", str(key))
    text = text.replace(pattern, str(rules_dir / Path(pattern).name))
    (tmp_path / "prometheus.yml").write_text(text)
    result = run(promtool(), "check", "config", tmp_path / "prometheus.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(ALERTS)} rules found" in result.stdout


# -- every expression names only what Spool exports -----------------------------------

_KEYWORDS = {"and", "or", "unless", "bool", "group_left", "group_right", "inf", "nan"}


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads (not functions, labels or keywords)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    text = re.sub(r"\{[^}]*\}", "", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", "", text)  # ranges
    text = re.sub(r"\boffset\s+-?\w+", "", text)
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", text)
    text = re.sub(r"\b\d+(\.\d+)?(e[+-]?\d+)?\b", "", text)
    names = set()
    for match in re.finditer(r"[a-zA-Z_:][a-zA-Z0-9_:]*", text):
        if text[match.end() :].lstrip().startswith("("):
            continue  # a function or aggregation
        if match.group().lower() not in _KEYWORDS:
            names.add(match.group())
    return names


def test_metric_names_finds_metrics_and_nothing_else() -> None:
    expr = (
        'sum by (le, queue) (rate(a_bucket{queue=~"$queue", le!="x"}[$__rate_interval])) / '
        "on (queue) group_left max without (job) (b) > 0.25 and time() - c offset 5m or vector(1)"
    )
    assert metric_names(expr) == {"a_bucket", "b", "c"}


def exported(exposition: str) -> set[str]:
    """Every sample name the exposition's families can carry (a family with no sample
    yet, such as a histogram nothing has observed, still has its TYPE line)."""
    names: set[str] = set()
    for name, kind in re.findall(r"^# TYPE (\S+) (\S+)$", exposition, re.M):
        if kind == "histogram":
            names.update(name + suffix for suffix in ("_bucket", "_count", "_sum"))
        elif kind == "counter":
            names.add(name if name.endswith("_total") else name + "_total")
        else:
            names.add(name)
    return names


def test_every_expression_names_only_exported_families(api: Api) -> None:
    api.enqueue({"type": "echo"})
    reply = api.get("/metrics", key=OPERATOR_KEY)
    assert reply.status == 200, reply.body
    families = exported(reply.body.decode())
    assert {"spool_jobs_dead_total", "spool_job_end_to_end_seconds_bucket"} <= families
    exprs = [r["expr"] for r in rules()] + dashboard_exprs()
    for expr in exprs:
        names = metric_names(expr)
        assert names, f"no metric in {expr!r}"
        assert names <= families, f"{sorted(names - families)} are not exported: {expr!r}"
    used = set().union(*(metric_names(e) for e in exprs))
    for family in (
        "spool_queue_oldest_due_age_seconds",
        "spool_workers_live",
        "spool_worker_last_heartbeat_timestamp_seconds",
        "spool_job_end_to_end_seconds_bucket",
        "spool_job_run_duration_seconds_bucket",
        "spool_job_queue_wait_seconds_bucket",
        "spool_jobs",
    ):
        assert family in used, f"nothing shows {family}"


def test_the_dashboard_is_importable_and_filters_by_queue() -> None:
    board = json.loads(DASHBOARD.read_text())
    (source,) = board["__inputs"]
    assert source["pluginId"] == "prometheus"
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    for panel in board["panels"]:
        assert panel["datasource"]["uid"] == "${DS_PROMETHEUS}", panel["title"]
        assert panel["targets"], panel["title"]
    (queue,) = board["templating"]["list"]
    assert queue["name"] == "queue"
    queued = [e for e in dashboard_exprs() if "spool_jobs" in e or "spool_queue" in e]
    assert queued and all('queue=~"$queue"' in e for e in queued)


def test_every_panel_on_a_family_with_a_queue_label_follows_the_queue_variable() -> None:
    """Was: "Attempts per second by outcome" summed every queue's attempts whichever
    queue the variable picked, beside panels that showed that queue alone. Every
    selector of a family that carries `queue` must filter by it."""
    unqueued = {
        "spool_workers_live",
        "spool_worker_last_heartbeat_timestamp_seconds",
        "spool_cache_hits_total",
        "spool_cache_misses_total",
    }
    for expr in dashboard_exprs():
        for name in metric_names(expr) - unqueued:
            selectors = re.findall(rf"\b{name}(\{{[^}}]*\}})?", expr)
            assert selectors, (name, expr)
            for selector in selectors:
                assert 'queue=~"$queue"' in selector, f"{name} without the queue filter: {expr!r}"


def test_workers_in_containers_serve_metrics_where_prometheus_looks() -> None:
    """The CLI binds loopback by default; the containers must bind all interfaces on the
    port Prometheus (and the pod's probes and Service) use, or scraping fails silently."""
    from local.cli import build_parser

    parser = build_parser()
    assert parser.parse_args(["worker"]).metrics_host == "127.0.0.1"
    assert parser.parse_args(["worker"]).metrics_port is None
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())["services"]["worker"]
    pod = yaml.safe_load((DEPLOY / "k8s" / "base" / "worker-deployment.yaml").read_text())
    (container,) = pod["spec"]["template"]["spec"]["containers"]
    scrape = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())["scrape_configs"]
    (worker_job,) = [j for j in scrape if j["job_name"] == "spool-worker"]
    (dns,) = worker_job["dns_sd_configs"]
    for command in (compose["command"], container["args"]):
        args = parser.parse_args(command)
        assert args.command == "worker"
        assert args.metrics_host == "0.0.0.0", command
        assert args.metrics_port == dns["port"], command
    (port,) = container["ports"]
    assert port["containerPort"] == dns["port"]
    assert f"127.0.0.1:{dns['port']}/metrics" in " ".join(compose["healthcheck"]["test"])

"""The self-hosting kit (deploy/), validated offline.

Every Kubernetes manifest against the Kubernetes schema (kubernetes-validate,
strict: unknown fields fail), the Dockerfile with hadolint, the compose file
against the Compose specification's schema (check-jsonschema's bundled copy),
Prometheus's configuration with promtool, and the files' promises to each
other: kustomize lists every manifest, the worker's grace period covers the
longest handler timeout, every Secret key a pod reads exists in the example,
and the `spool` commands the containers run are real commands.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from chalicelib.handlers import registry
from chalicelib.runtime import BUILTIN_HANDLER_MODULES
from local.cli import build_parser
from tests.pg_support import fresh_schema

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
BASE = DEPLOY / "k8s" / "base"
OVERLAY = DEPLOY / "k8s" / "overlays" / "example"
BIN = Path(sys.executable).parent


def _docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def _manifests() -> list[Path]:
    return sorted(p for p in BASE.glob("*.yaml") if p.name != "kustomization.yaml")


# Custom resources have no schema in Kubernetes' own; each gets its own test.
CUSTOM_RESOURCES = {"worker-scaledobject.yaml"}


def _run(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(a) for a in args], capture_output=True, text=True, timeout=120, check=False
    )


def _by_kind(kind: str) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    for path in _manifests():
        for doc in _docs(path):
            if doc["kind"] == kind:
                found[doc["metadata"]["name"]] = doc
    return found


def _pod_specs() -> dict[str, dict[str, Any]]:
    specs = {n: d["spec"]["template"]["spec"] for n, d in _by_kind("Deployment").items()}
    specs.update({n: d["spec"]["template"]["spec"] for n, d in _by_kind("Job").items()})
    return specs


@pytest.mark.parametrize(
    "path", [p for p in _manifests() if p.name not in CUSTOM_RESOURCES], ids=lambda p: p.name
)
def test_manifest_matches_the_kubernetes_schema(path: Path) -> None:
    result = _run(BIN / "kubernetes-validate", "--strict", path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "passed" in result.stdout


def test_overlay_manifests_match_the_kubernetes_schema() -> None:
    result = _run(BIN / "kubernetes-validate", "--strict", OVERLAY / "namespace.yaml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_kustomizations_list_exactly_the_files_beside_them() -> None:
    base = yaml.safe_load((BASE / "kustomization.yaml").read_text())
    assert sorted(base["resources"]) == [p.name for p in _manifests()]
    overlay = yaml.safe_load((OVERLAY / "kustomization.yaml").read_text())
    for entry in overlay["resources"]:
        assert (OVERLAY / entry).exists(), entry
    for patch in overlay.get("patches", []):
        target = yaml.safe_load((OVERLAY / patch["path"]).read_text())
        assert target["metadata"]["name"] in _by_kind(target["kind"]), patch


def _template_labels_after_kustomize() -> dict[str, dict[str, str]]:
    """Each pod template's labels as `kubectl kustomize` renders the base: the
    kustomization's `labels` reach pod templates only with includeSelectors or
    includeTemplates (kustomize's defaults leave templates alone)."""
    kustomization = yaml.safe_load((BASE / "kustomization.yaml").read_text())
    added: dict[str, str] = {}
    for entry in kustomization.get("labels", []):
        if entry.get("includeSelectors") or entry.get("includeTemplates"):
            added.update(entry["pairs"])
    rendered = {}
    for kind in ("Deployment", "Job"):
        for name, doc in _by_kind(kind).items():
            own = doc["spec"]["template"]["metadata"].get("labels", {})
            rendered[name] = {**own, **added}
    return rendered


def test_the_network_policy_selects_every_pod() -> None:
    """Was: the policy selected pods by app.kubernetes.io/part-of, which the kustomization
    added to each object's own labels but not to its pod template, so it selected no
    pod: every pod, the workers' unauthenticated metrics port included, took traffic
    from the whole cluster and sent it anywhere."""
    (policy,) = _by_kind("NetworkPolicy").values()
    wanted = policy["spec"]["podSelector"]["matchLabels"]
    for name, labels in _template_labels_after_kustomize().items():
        assert wanted.items() <= labels.items(), f"the NetworkPolicy does not select {name}"


def test_kubectl_kustomize_renders_pods_the_network_policy_selects() -> None:
    """The same, as kubectl's own kustomize renders the example overlay."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed; the test above checks the same offline")
    result = _run(kubectl, "kustomize", OVERLAY)
    if result.returncode != 0 and "spool.env" in result.stderr:
        result = _run(kubectl, "kustomize", BASE)  # the overlay's Secret file is local only
    assert result.returncode == 0, result.stderr
    docs = [d for d in yaml.safe_load_all(result.stdout) if d]
    (policy,) = [d for d in docs if d["kind"] == "NetworkPolicy"]
    wanted = policy["spec"]["podSelector"]["matchLabels"]
    pods = [d for d in docs if d["kind"] in ("Deployment", "Job")]
    assert pods
    for doc in pods:
        labels = doc["spec"]["template"]["metadata"]["labels"]
        assert wanted.items() <= labels.items(), doc["metadata"]["name"]


def test_pods_run_as_non_root_on_a_read_only_root_filesystem() -> None:
    for name, spec in _pod_specs().items():
        assert spec["securityContext"]["runAsNonRoot"] is True, name
        assert spec["serviceAccountName"] == "spool", name
        for container in spec["containers"]:
            ctx = container["securityContext"]
            assert ctx["readOnlyRootFilesystem"] is True, name
            assert ctx["allowPrivilegeEscalation"] is False, name
            assert ctx["capabilities"]["drop"] == ["ALL"], name
            mounts = {m["mountPath"] for m in container.get("volumeMounts", [])}
            assert "/tmp" in mounts, f"{name}: a read-only root needs a writable /tmp"


def test_secrets_come_from_the_secret_and_exist_in_the_example() -> None:
    example = (OVERLAY / "spool.env.example").read_text().splitlines()
    keys = {line.split("=", 1)[0] for line in example if "=" in line}
    read: set[str] = set()
    for name, spec in _pod_specs().items():
        for container in spec["containers"]:
            env = {e["name"]: e for e in container.get("env", [])}
            assert "value" not in env["SPOOL_STORE_URL"], f"{name}: the store URL is a secret"
            for entry in env.values():
                ref = entry.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    assert ref["name"] == "spool"
                    read.add(ref["key"])
    assert read <= keys, f"the example Secret lacks {sorted(read - keys)}"
    assert "SPOOL_API_KEYS" not in (BASE / "configmap.yaml").read_text()


def test_worker_grace_period_covers_the_longest_handler_timeout() -> None:
    registry.load(BUILTIN_HANDLER_MODULES)
    longest = registry.max_timeout()
    worker = _pod_specs()["spool-worker"]
    assert worker["terminationGracePeriodSeconds"] >= longest + 10
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    grace = compose["services"]["worker"]["stop_grace_period"]
    assert int(grace.rstrip("s")) >= longest + 10


def test_api_has_probes_an_hpa_and_a_disruption_budget() -> None:
    api = _pod_specs()["spool-api"]["containers"][0]
    assert api["readinessProbe"]["httpGet"]["path"] == "/health"
    assert "livenessProbe" in api
    hpa = _by_kind("HorizontalPodAutoscaler")["spool-api"]
    assert hpa["spec"]["scaleTargetRef"]["name"] == "spool-api"
    pdbs = _by_kind("PodDisruptionBudget")
    assert {"spool-api", "spool-worker"} <= set(pdbs)


def test_keda_scaledobject_targets_the_workers() -> None:
    (scaled,) = _docs(BASE / "worker-scaledobject.yaml")
    assert scaled["apiVersion"] == "keda.sh/v1alpha1"
    assert scaled["kind"] == "ScaledObject"
    spec = scaled["spec"]
    assert spec["scaleTargetRef"]["name"] in _by_kind("Deployment")
    assert 1 <= spec["minReplicaCount"] <= spec["maxReplicaCount"]
    (trigger,) = spec["triggers"]
    assert trigger["type"] == "postgresql"
    meta = trigger["metadata"]
    assert set(meta) <= {
        "connectionFromEnv",
        "query",
        "targetQueryValue",
        "activationTargetQueryValue",
    }
    worker_env = {e["name"] for e in _pod_specs()["spool-worker"]["containers"][0].get("env", [])}
    assert meta["connectionFromEnv"] in worker_env
    float(meta["targetQueryValue"])


@pytest.mark.postgres
def test_keda_query_runs_against_the_real_schema() -> None:
    """The scaler's SQL counts due jobs in Spool's migrated tables."""
    from chalicelib.storage.postgres import connect, parse_url

    (scaled,) = _docs(BASE / "worker-scaledobject.yaml")
    query = scaled["spec"]["triggers"][0]["metadata"]["query"]
    with fresh_schema() as url, connect(parse_url(url)) as conn:
        (count,) = conn.execute(query).fetchone() or (None,)
    assert count == 0


def test_dockerfile_passes_hadolint() -> None:
    result = _run(BIN / "hadolint", DEPLOY / "Dockerfile")
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_is_multi_stage_non_root_with_a_healthcheck() -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    assert len(re.findall(r"^FROM ", text, re.M)) >= 2
    user = re.findall(r"^USER (\S+)", text, re.M)
    assert user and not user[-1].startswith(("root", "0"))
    assert re.search(r"^HEALTHCHECK ", text, re.M)
    for copied in re.findall(r"^COPY (?!--from)(.+?) \S+$", text, re.M):
        for source in copied.split():
            assert (ROOT / source).exists(), f"Dockerfile copies a missing {source}"


def test_compose_file_matches_the_compose_specification() -> None:
    result = _run(
        BIN / "check-jsonschema", "--builtin-schema", "vendor.compose-spec", DEPLOY / "compose.yaml"
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_runs_migrations_before_api_and_two_workers() -> None:
    services = yaml.safe_load((DEPLOY / "compose.yaml").read_text())["services"]
    assert services["migrate"]["command"] == ["db", "migrate"]
    for name in ("api", "worker"):
        assert services[name]["depends_on"]["migrate"]["condition"] == (
            "service_completed_successfully"
        )
    assert services["worker"]["deploy"]["replicas"] == 2
    assert "prometheus" in services


def test_prometheus_config_passes_promtool(tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        if os.environ.get("CI") or os.environ.get("SPOOL_REQUIRE_POSTGRES"):
            pytest.fail("promtool is missing (Debian package prometheus); .ci/run installs it")
        pytest.skip("promtool is not installed (apt-get install prometheus)")
    config = (DEPLOY / "prometheus.yml").read_text()
    key_file = tmp_path / "metrics-key"
    key_file.write_text("example")
    local = tmp_path / "prometheus.yml"
    local.write_text(config.replace("/etc/prometheus/metrics-key", str(key_file)))
    result = _run(promtool, "check", "config", local)
    assert result.returncode == 0, result.stdout + result.stderr


def _container_commands() -> list[list[str]]:
    commands: list[list[str]] = []
    text = (DEPLOY / "Dockerfile").read_text()
    cmd = re.search(r"^CMD (\[.*\])$", text, re.M)
    assert cmd is not None
    commands.append(yaml.safe_load(cmd.group(1)))
    services = yaml.safe_load((DEPLOY / "compose.yaml").read_text())["services"]
    commands += [s["command"] for s in services.values() if s.get("image", "").startswith("spool")]
    for spec in _pod_specs().values():
        commands += [c["args"] for c in spec["containers"]]
    return commands


def test_every_container_command_is_a_spool_command() -> None:
    assert re.search(r'^ENTRYPOINT \["spool"\]$', (DEPLOY / "Dockerfile").read_text(), re.M)
    parser = build_parser()
    commands = _container_commands()
    assert len(commands) >= 6
    for command in commands:
        parser.parse_args(command)  # SystemExit (a failed test) on an unknown command or flag


def _local(command: list[str]) -> list[str]:
    """A container command as a test can run it: the same words, but any port 0 (a free
    one) and any bind address loopback, so it never clashes or listens beyond this host."""
    out = list(command)
    for flag, value in (("--port", "0"), ("--metrics-port", "0"), ("--host", "127.0.0.1"),
                        ("--metrics-host", "127.0.0.1")):  # fmt: skip
        if flag in out:
            out[out.index(flag) + 1] = value
    return out


def _first_line(stream: Any, pattern: str, proc: subprocess.Popen[str]) -> str:
    seen: list[str] = []
    for line in stream:
        seen.append(line)
        found = re.search(pattern, line)
        if found:
            return found.group(1)
    proc.wait(10)
    raise AssertionError(f"never printed {pattern!r}:\n" + "".join(seen))


@pytest.mark.postgres
def test_the_container_commands_start_against_postgres() -> None:
    """Each distinct command the image, compose and the manifests run, started for real
    (as `spool ...`, the image's ENTRYPOINT) against a fresh Postgres schema: the
    migration exits 0, the API answers /health, the worker serves its metrics."""
    import urllib.request

    from tests.procs import guarded_env, stop

    distinct = {tuple(c) for c in _container_commands()}
    assert {c[0] for c in distinct} == {"serve", "worker", "db"}
    with fresh_schema(migrate=False) as url:
        env = guarded_env(
            SPOOL_STORE_URL=url,
            SPOOL_API_KEYS="k-0123456789abcdef=acme",
            SPOOL_METRICS_KEYS="ops-key-0123456789",
        )
        # Migrations first, as compose and the Job run them.
        for command in sorted(c for c in distinct if c[0] == "db"):
            ran = subprocess.run(
                [str(BIN / "spool"), *_local(list(command))],
                env=env, capture_output=True, text=True, timeout=120, check=False,
            )  # fmt: skip
            assert ran.returncode == 0, ran.stderr
        for command in sorted(c for c in distinct if c[0] != "db"):
            proc = subprocess.Popen(
                [str(BIN / "spool"), *_local(list(command))],
                env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            )  # fmt: skip
            try:
                if command[0] == "serve":
                    base = _first_line(proc.stdout, r"serving app\.py on (http://\S+)", proc)
                    probe = f"{base}/health"
                else:
                    probe = _first_line(proc.stderr, r"metrics at (http://\S+)", proc)
                with urllib.request.urlopen(probe, timeout=10) as reply:
                    assert reply.status == 200, (command, probe)
            finally:
                stop(proc)

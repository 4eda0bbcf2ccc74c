"""What `spool serve` and `spool worker` print at start: no secret, one tenant.

Real processes over real sockets: the banner is what a person copies from.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import requests

from tests.pg_support import fresh_schema
from tests.procs import guarded_env, spool_serve, stop

ROOT = Path(__file__).resolve().parent.parent
SPOOL = Path(sys.executable).with_name("spool")
SECRET_KEY = "configured-key-never-printed-7f3a"


def with_password(url: str, password: str) -> str:
    """The same server (trust auth ignores the password), with one in the URL."""
    return url.replace("postgresql://postgres@", f"postgresql://postgres:{password}@", 1)


@contextmanager
def serving(*extra: str, drop: tuple[str, ...] = (), **env: str) -> Iterator[tuple[str, str]]:
    """`spool serve` on a free port; yields (banner, base URL) and stops it after."""
    child = {k: v for k, v in guarded_env(**env).items() if k not in drop}
    served = spool_serve(*extra, env=child)
    try:
        yield served.banner, served.url
    finally:
        stop(served.proc)


def test_configured_keys_and_store_passwords_are_never_printed(tmp_path: Path) -> None:
    with fresh_schema() as url:
        store_url = with_password(url, "s3cret-pw")
        with serving(
            "--no-worker", SPOOL_STORE_URL=store_url, SPOOL_API_KEYS=f"{SECRET_KEY}=acme"
        ) as (banner, base):
            assert SECRET_KEY not in banner
            assert "s3cret-pw" not in banner and "postgres:***@127.0.0.1" in banner
            assert "<your key>" in banner and "not shown" in banner
            # The server still takes the configured key: only the banner is quiet.
            ok = requests.get(f"{base}/openapi.json", headers={"X-API-Key": SECRET_KEY}, timeout=10)
            assert ok.status_code == 200


def test_the_worker_banner_redacts_the_store_url() -> None:
    with fresh_schema() as url:
        env = guarded_env(SPOOL_STORE_URL=with_password(url, "s3cret-pw"))
        proc = subprocess.Popen(
            [str(SPOOL), "worker", "--concurrency", "1"],
            cwd=ROOT,
            env=env,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            assert proc.stderr is not None
            first = proc.stderr.readline()
            proc.send_signal(signal.SIGTERM)
            rest = proc.communicate(timeout=30)[1]
        finally:
            stop(proc)
        assert first.startswith("spool worker: concurrency 1, store postgresql://postgres:***@")
        assert "s3cret-pw" not in first + rest


def test_a_job_enqueued_with_the_cli_answers_over_http_with_the_dev_key(tmp_path: Path) -> None:
    """One tenant for local use: `spool enqueue` and `spool serve`'s dev key agree."""
    store = f"sqlite:///{tmp_path}/local.db"
    added = subprocess.run(
        [str(SPOOL), "enqueue", "echo", "--json", "--payload", '{"n": 1}'],
        cwd=tmp_path,
        env=guarded_env(SPOOL_STORE_URL=store),
        capture_output=True,
        text=True,
        timeout=60,
    )
    job_id = json.loads(added.stdout)["id"]
    with serving(drop=("SPOOL_API_KEYS",), SPOOL_STORE_URL=store) as (banner, base):
        key = re.search(r"dev API key \(tenant default\), made for this run: (\S+)", banner)
        assert key, banner
        reply = requests.get(
            f"{base}/status/{job_id}",
            params={"wait": 10},
            headers={"X-API-Key": key.group(1)},
            timeout=30,
        )
        assert reply.status_code == 200, reply.text
        assert reply.json()["state"] == "succeeded"  # the emulated worker ran it too


def test_laptop_mode_offers_the_demo_handlers_unless_told_not_to(tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path}/local.db"
    drop = ("SPOOL_API_KEYS", "SPOOL_DEMO_HANDLERS")
    with serving(drop=drop, SPOOL_STORE_URL=store) as (banner, _):
        assert "demo    echo, sleep, fail" in banner and '"type": "echo"' in banner
    with serving(drop=("SPOOL_API_KEYS",), SPOOL_STORE_URL=store, SPOOL_DEMO_HANDLERS="false") as (
        banner,
        base,
    ):
        assert "demo    off" in banner and "echo" not in banner.split("demo    off")[1]
        key = re.search(r"made for this run: (\S+)", banner)
        assert key
        refused = requests.post(
            f"{base}/enqueue",
            json={"type": "echo"},
            headers={"X-API-Key": key.group(1)},
            timeout=10,
        )
        assert refused.status_code == 422 and "echo" in refused.text


def test_keys_read_from_a_parameter_are_keys_no_dev_key_is_made(tmp_path: Path) -> None:
    """Was: only SPOOL_API_KEYS counted, so a server told to read its keys from SSM made
    a dev key and turned the demo handlers on beside them."""
    store = f"sqlite:///{tmp_path}/local.db"
    drop = ("SPOOL_API_KEYS", "SPOOL_DEMO_HANDLERS")
    with serving(drop=drop, SPOOL_STORE_URL=store, SPOOL_API_KEYS_PARAMETER="/spool/t/keys") as (
        banner,
        _,
    ):
        assert "made for this run" not in banner and "dev-" not in banner
        assert "demo    off" in banner


def test_a_shared_store_without_keys_is_refused_not_served_with_a_dev_key() -> None:
    """Was: `spool serve` on a Postgres, Redis or DynamoDB store without SPOOL_API_KEYS
    made a dev key of its own and offered the demo handlers on the store other servers
    and workers share. The refusal comes before any connection (no traffic leaves)."""
    env = {
        k: v
        for k, v in guarded_env(
            SPOOL_STORE_URL="postgresql://spool:s3cret@db.internal:5432/jobs"
        ).items()
        if k != "SPOOL_API_KEYS"
    }
    done = subprocess.run(
        [str(SPOOL), "serve", "--no-worker", "--port", "0"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2 and done.stdout == ""
    [line] = done.stderr.splitlines()
    assert line.startswith("spool: serving a shared store (postgresql://spool:***@db.internal")
    assert "needs API keys" in line and "SPOOL_API_KEYS=KEY=TENANT" in line
    assert "s3cret" not in line and "dev-" not in line


@pytest.mark.parametrize(
    "url, local",
    [
        ("sqlite:///.spool/spool.db", True),
        ("memory://", True),
        ("postgresql://postgres@127.0.0.1:5432/test", True),
        ("postgresql://u@localhost/test", True),
        ("postgresql:///test", True),  # a Unix socket
        ("redis://[::1]:6379/0", True),
        ("dynamodb://jobs?queue=jobs&endpoint=http://127.0.0.1:5000&create=1", True),
        ("postgresql://u@db.internal/jobs", False),
        ("postgresql://u@10.0.0.5/jobs", False),
        ("redis://cache.example.com:6379/0", False),
        ("dynamodb://jobs?queue=jobs", False),  # AWS itself
        ("dynamodb://jobs?queue=jobs&endpoint=https://dynamodb.eu-west-1.amazonaws.com", False),
    ],
)
def test_a_dev_key_is_made_only_for_a_store_on_this_machine(url: str, local: bool) -> None:
    from chalicelib.config import ConfigError
    from local.serve import refuse_laptop_mode_on_a_shared_store

    if local:
        refuse_laptop_mode_on_a_shared_store(url)
    else:
        with pytest.raises(ConfigError, match="needs API keys"):
            refuse_laptop_mode_on_a_shared_store(url)


def test_without_a_worker_the_banner_says_what_runs_the_jobs(tmp_path: Path) -> None:
    """README's `spool serve --processes 4 --no-worker`: the banner offered `?wait=5` on an
    echo job and said only "worker off"; the job stayed queued with nothing to say why."""
    with serving("--no-worker", SPOOL_STORE_URL=f"sqlite:///{tmp_path}/s.db") as (banner, _):
        line = next(x for x in banner.splitlines() if x.startswith("  worker  "))
        assert line == "  worker  off (--no-worker: jobs wait for a `spool worker` on this store)"


def test_without_a_worker_on_a_store_fed_by_sqs_the_banner_names_the_sqs_worker() -> None:
    """On DynamoDB jobs travel by SQS: a `spool worker` there only hands them to the
    queue (docs/aws.md), so the banner named the wrong program to start."""
    from types import SimpleNamespace

    from local.serve import _worker_line

    fed_by_sqs = SimpleNamespace(store=SimpleNamespace(dispatch=object()))
    line = _worker_line(None, fed_by_sqs)  # type: ignore[arg-type]
    assert "local.sqs_poller" in line and "spool worker" not in line, line
    plain = SimpleNamespace(store=SimpleNamespace())
    assert "`spool worker`" in _worker_line(None, plain)  # type: ignore[arg-type]


def test_the_banner_names_the_job_types_it_loaded(tmp_path: Path) -> None:
    """A user whose SPOOL_HANDLERS module was or was not picked up could not tell from
    the banner: it named only the demo's three. It now counts and names every type."""
    store = f"sqlite:///{tmp_path}/local.db"
    drop = ("SPOOL_API_KEYS", "SPOOL_DEMO_HANDLERS")
    with serving("--no-worker", drop=drop, SPOOL_STORE_URL=store) as (banner, _):
        line = next(x for x in banner.splitlines() if x.startswith("  types   "))
        names = line.split(": ", 1)[1].split(", ")
        assert names == sorted(names) and {"echo", "fail", "sleep"} <= set(names), line
        assert line.startswith(f"  types   {len(names)} loaded: "), line


def test_the_worker_start_line_names_the_job_types_it_loaded(tmp_path: Path) -> None:
    env = guarded_env(SPOOL_STORE_URL=f"sqlite:///{tmp_path}/w.db", SPOOL_DEMO_HANDLERS="true")
    proc = subprocess.Popen(  # -m: this checkout's code, not the one `spool` was installed from
        [sys.executable, "-m", "local.cli", "worker", "--concurrency", "1"],
        cwd=ROOT,
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None
        first = proc.stderr.readline()
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)
    finally:
        stop(proc)
    shown = re.search(r", (\d+) job types: (.*)$", first.rstrip("\n"))
    assert shown, first
    names = shown.group(2).split(", ")
    assert int(shown.group(1)) == len(names) and names == sorted(names), first
    assert {"echo", "fail", "sleep"} <= set(names), first


@pytest.mark.parametrize("count", [0, 1, 12, 13, 40])
def test_a_long_list_of_job_types_is_shortened_but_counted(count: int) -> None:
    from local.serve import listed_types

    types = [f"t{i:02d}" for i in range(count)]
    text = listed_types(types)
    if count == 0:
        assert text == "none"
    elif count <= 12:
        assert text == ", ".join(types)
    else:
        assert text.startswith(", ".join(types[:10]) + ", ")
        assert text.endswith(f"and {count - 10} more") and types[-1] not in text

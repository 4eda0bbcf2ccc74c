"""SPOOL_STORE_URL=redis://... through the real shells: `spool serve` over a socket,
`spool worker` processes and the command line, all sharing one Redis key prefix."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.apikit import API_KEYS, KEY_A, KEY_B, TENANT_A
from tests.procs import guarded_env, spool_serve, stop
from tests.redis_support import free_port, fresh_prefix

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def redis_url() -> Iterator[str]:
    with fresh_prefix() as url:
        yield url


def spool(*args: str, url: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = guarded_env(SPOOL_STORE_URL=url)
    return subprocess.run(
        [sys.executable, "-m", "local.cli", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def wait_for(
    session: requests.Session, url: str, state: str, seconds: float = 20
) -> dict[str, Any]:
    deadline = time.monotonic() + seconds
    while True:
        body: dict[str, Any] = session.get(url, params={"wait": 5}, timeout=10).json()
        if body.get("state") == state or time.monotonic() > deadline:
            return body


@pytest.mark.slow
def test_serve_worker_and_cli_share_one_redis_store(redis_url: str) -> None:
    env = guarded_env(SPOOL_STORE_URL=redis_url, SPOOL_API_KEYS=API_KEYS)
    served = spool_serve("--no-worker", "--threads", "4", env=env)
    worker = subprocess.Popen(
        [sys.executable, "-m", "local.cli", "worker", "--concurrency", "2", "--quiet"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        with requests.Session() as session:
            session.headers["X-API-Key"] = KEY_A
            created = session.post(
                f"{served.url}/enqueue", json={"type": "echo", "payload": {"hi": 1}}, timeout=10
            )
            assert created.status_code == 201, created.text
            status_url = served.url + created.json()["status_url"]
            done = wait_for(session, status_url, "succeeded")
            assert done["state"] == "succeeded", done
            assert done["result"] == {"hi": 1}
            job_id = created.json()["id"]
            # Another tenant's key sees nothing of it.
            other = session.get(status_url, headers={"X-API-Key": KEY_B}, timeout=10)
            assert other.status_code == 404

            # The command line writes to the same store; the worker runs it too.
            out = spool(
                "enqueue", "echo", "--payload", '{"n": 2}', "--tenant", TENANT_A, "--json",
                url=redis_url,
            )  # fmt: skip
            assert out.returncode == 0, out.stderr
            [cli_id] = re.findall(r"j_[0-9a-f]{32}", out.stdout)  # text or JSON output
            from_cli = wait_for(session, f"{served.url}/status/{cli_id}", "succeeded")
            assert from_cli["result"] == {"n": 2}

            # A job that fails for good lands in the dead letters, listed by the CLI.
            failing = session.post(
                f"{served.url}/enqueue",
                json={"type": "fail", "payload": {"always": True}, "max_attempts": 1},
                timeout=10,
            )
            assert failing.status_code == 201, failing.text
            dead_id = failing.json()["id"]
            dead = wait_for(session, f"{served.url}/status/{dead_id}", "dead")
            assert dead["state"] == "dead", dead
        status = spool("status", job_id, url=redis_url)
        assert status.returncode == 0, status.stderr
        assert "succeeded" in status.stdout
        listed = spool("dlq", "list", "--tenant", TENANT_A, url=redis_url)
        assert listed.returncode == 0, listed.stderr
        assert dead_id in listed.stdout and job_id not in listed.stdout
    finally:
        stop(worker)
        stop(served.proc)
    assert worker.returncode == 0, worker.stderr.read() if worker.stderr else ""


def test_an_unreachable_redis_is_one_line_naming_it_without_a_traceback() -> None:
    closed = free_port()
    out = spool(
        "enqueue", "echo", url=f"redis://:secret-pw@127.0.0.1:{closed}/0?timeout=1", timeout=60
    )
    assert out.returncode != 0
    assert f"127.0.0.1:{closed}" in out.stderr
    assert "Redis" in out.stderr
    assert "secret-pw" not in out.stderr
    assert "Traceback" not in out.stderr


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("redis://127.0.0.1:6379/0?prefix=has{brace}", "prefix"),
        ("redis://127.0.0.1:6379/zero", "database number"),
        ("redis://127.0.0.1:6379/0?pool_max=0", "pool_max"),
    ],
)
def test_a_malformed_redis_url_is_refused_at_start(url: str, says: str) -> None:
    out = spool("enqueue", "echo", url=url)
    assert out.returncode != 0
    assert says in out.stderr
    assert "Traceback" not in out.stderr

"""A refusal's fix says what would change the answer (stop 59, helper d).

Was (`spool enqueue` against a real `spool serve`, and on the local store): every 422
ended "Fix the arguments and try again" (remote) or "Fix the job and try again"
(local), and every 429 "The server is busy or its store is down: try again later".
Three of those sent a new user the wrong way:

- a handler's admit check that refuses the job for this tenant (a per-tenant
  allowlist, a spent quota, http_request's empty SPOOL_HTTP_ALLOWLIST): the
  arguments were fine, what they may ask for is the tenant's or the operator's;
- the tenant's rate or backlog limit (SPOOL_TENANT_LIMITS): the server is neither
  busy nor down, and "Retry-After" is a header the command line's user never sees;
- too many failed keys from this address: the key is what to check.

Now each says which it is. The server marks an admit refusal in its details
(`"refused_by": "admit"`), so the client need not read the message's words.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.procs import ROOT, guarded_env, spool_serve, stop

pytestmark = pytest.mark.timeout(120)

KEY, OTHER, OPERATOR = (
    "s59d-acme-key-0123456789",
    "s59d-other-key-0123456789",
    "s59d-op-0123456789ab",
)
FULL = "s59d-full-key-0123456789"
HANDLERS = (
    "from chalicelib.handlers import handler\n\n\n"
    "def _admit(payload, tenant):\n"
    "    if tenant == 'other':\n"
    "        raise ValueError(f'tenant {tenant!r} may not send reports')\n\n\n"
    "@handler('report', admit=_admit)\n"
    "def report(payload: dict) -> dict:\n"
    "    return {}\n"
)
MISLEADING = ("Fix the arguments", "Fix the job", "busy or its store is down", "Retry-After")


def _project(tmp_path: Path) -> dict[str, str]:
    (tmp_path / "myapp").mkdir(exist_ok=True)
    (tmp_path / "myapp" / "__init__.py").write_text("")
    (tmp_path / "myapp" / "jobs.py").write_text(HANDLERS)
    return guarded_env(
        SPOOL_STORE_URL=f"sqlite:///{tmp_path}/spool.db",
        SPOOL_HANDLERS="myapp.jobs",
        PYTHONPATH=f"{tmp_path}:{ROOT}",
    )


def _spool(env: dict[str, str], *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "local.cli", *argv],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, dict[str, str]]]:
    env = _project(tmp_path)
    server = spool_serve(
        env={
            **env,
            "SPOOL_API_KEYS": f"{KEY}=acme,{OTHER}=other,{FULL}=acme2",
            "SPOOL_METRICS_KEYS": OPERATOR,
            "SPOOL_TENANT_LIMITS": '{"acme": {"rate": "1/h", "burst": 1}, "acme2": {"backlog": 1}}',
            "SPOOL_AUTH_FAILURES": "2/h",
        }
    )
    try:
        yield server.url, {k: v for k, v in env.items() if k != "SPOOL_STORE_URL"}
    finally:
        stop(server.proc)


def _line(done: subprocess.CompletedProcess[str]) -> str:
    [line] = done.stderr.splitlines()
    assert not any(words in line for words in MISLEADING), line
    return line


def test_an_admit_refusal_on_the_local_store_names_the_tenant(tmp_path: Path) -> None:
    done = _spool(_project(tmp_path), "enqueue", "report", "--tenant", "other")
    assert done.returncode == 2
    line = _line(done)
    assert "tenant 'other' may not send reports" in line
    assert "admit check refuses this job for tenant 'other' (--tenant)" in line


def test_an_admit_refusal_from_a_server_says_it_is_the_key_s_tenant(
    served: tuple[str, dict[str, str]],
) -> None:
    url, env = served
    reply = requests.post(
        f"{url}/enqueue", json={"type": "report"}, headers={"X-API-Key": OTHER}, timeout=10
    )
    assert reply.status_code == 422
    assert reply.json()["error"]["details"] == {"type": "report", "refused_by": "admit"}
    done = _spool(env, "enqueue", "report", "--url", url, "--key", OTHER)
    assert done.returncode == 2
    line = _line(done)
    assert "admit check refuses this job for your key's tenant" in line
    assert "ask the server's operator" in line
    batch = _spool(env, "enqueue", "report", "--count", "2", "--url", url, "--key", OTHER)
    assert "admit check refuses this job for your key's tenant" in _line(batch)


def test_an_empty_http_allowlist_is_the_operator_s_to_fix(
    served: tuple[str, dict[str, str]],
) -> None:
    url, env = served
    payload = '{"url": "https://example.com/"}'
    done = _spool(env, "enqueue", "http_request", "--payload", payload, "--url", url, "--key", KEY)
    assert done.returncode == 2
    assert "SPOOL_HTTP_ALLOWLIST" in _line(done)


def test_the_tenant_s_limits_are_not_a_busy_server(served: tuple[str, dict[str, str]]) -> None:
    url, env = served
    first = _spool(env, "enqueue", "report", "--delay", "1h", "--url", url, "--key", KEY)
    assert first.returncode == 0, first.stderr
    rate = _spool(env, "enqueue", "report", "--url", url, "--key", KEY)
    assert rate.returncode == 1
    line = _line(rate)
    assert "enqueue rate limit reached" in line
    assert "your key's tenant" in line and "SPOOL_TENANT_LIMITS" in line
    assert "try again in " in line
    held = _spool(env, "enqueue", "report", "--delay", "1h", "--url", url, "--key", FULL)
    assert held.returncode == 0, held.stderr
    backlog = _spool(env, "enqueue", "report", "--url", url, "--key", FULL)
    assert backlog.returncode == 1
    line = _line(backlog)
    assert "backlog is full" in line and "SPOOL_TENANT_LIMITS" in line


def test_too_many_failed_keys_says_to_check_the_key(served: tuple[str, dict[str, str]]) -> None:
    url, env = served
    lines = [
        _spool(env, "jobs", "--url", url, "--key", "s59d-wrong-key-0123456789").stderr
        for _ in range(4)
    ]
    shut = [line for line in lines if "too many failed authentications" in line]
    assert shut, lines
    line = shut[-1].strip()
    assert not any(words in line for words in MISLEADING), line
    assert "--key" in line and "try again in " in line


def test_an_operator_key_on_a_job_route_asks_for_a_tenant_key(
    served: tuple[str, dict[str, str]],
) -> None:
    url, env = served
    done = _spool(env, "jobs", "--url", url, "--key", OPERATOR)
    assert done.returncode == 2
    assert _line(done).endswith("Pass a tenant's key with --key or SPOOL_API_KEY.")

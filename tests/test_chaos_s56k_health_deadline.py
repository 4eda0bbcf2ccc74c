"""GET /health against a store that takes the connection and then says nothing.

A frozen Postgres (a stopped server, a network path that drops every packet) held
/health for the store's whole call deadline (35 s), and a stopped moto_server for
boto3's retries of its read timeout (about two minutes): a load balancer's probe
gives up long before that and learns nothing, and the server kept a thread per
probe. Now /health's store check has a deadline of its own (3 s, at most one check
in flight per process, later probes waiting on it), and a check that overruns it
answers 503 `store_unavailable` saying so, as a store that cannot be reached does.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import httpx
import pytest
from chalice.test import Client

import app as spool_app
from tests.apikit import installed, settings_for
from tests.moto_proc import MotoServer, moto_server
from tests.pg_proxy import PgProxy, pg_proxy
from tests.pg_support import fresh_schema
from tests.procs import guarded_env, serving_url

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

SAID = "gave no answer to /health's check within 3 s"


def through(url: str, proxy: PgProxy) -> str:
    parts = urlsplit(url)
    netloc = parts.netloc.rsplit("@", 1)
    host = f"127.0.0.1:{proxy.port}"
    netloc_new = f"{netloc[0]}@{host}" if len(netloc) == 2 else host
    return urlunsplit((parts.scheme, netloc_new, parts.path, parts.query, ""))


@pytest.fixture
def pg_served() -> Iterator[tuple[str, PgProxy]]:
    """The server's store calls bounded at statement_timeout + 5 s (10 s here, 35 s by
    default): the check left behind by the 503 holds /health that long once the proxy
    answers again. The 503 must still come from /health's own 3 s, and says so."""
    with fresh_schema(statement_timeout="5") as url, pg_proxy() as proxy:
        env = guarded_env(SPOOL_STORE_URL=through(url, proxy), SPOOL_HEALTH_CACHE_SECONDS="0")
        with serving_url("--threads", "4", "--no-worker", env=env) as served:
            yield served, proxy


def test_health_answers_within_its_deadline_when_postgres_says_nothing(
    pg_served: tuple[str, PgProxy],
) -> None:
    url, proxy = pg_served
    assert httpx.get(f"{url}/health").status_code == 200
    proxy.swallow()
    try:
        # Before: 503 "no answer within 35 s", after 35 s.
        answer = httpx.get(f"{url}/health", timeout=20)
        assert answer.status_code == 503, answer.text
        assert answer.json()["error"]["code"] == "store_unavailable"
        assert SAID in answer.json()["error"]["message"]
    finally:
        proxy.restore()
    deadline = time.monotonic() + 60
    while httpx.get(f"{url}/health", timeout=20).status_code != 200:
        assert time.monotonic() < deadline, "/health never answered 200 again"
        time.sleep(0.5)


@pytest.fixture
def moto(tmp_path: Path) -> Iterator[MotoServer]:
    with moto_server(tmp_path / "moto.log") as server:
        yield server


def test_health_answers_within_its_deadline_when_dynamodb_says_nothing(
    moto: MotoServer, tmp_path: Path
) -> None:
    store_url = f"dynamodb://jobs?queue=jobs&bucket=jobs-bucket&endpoint={moto.endpoint}&create=1"
    settings = settings_for(
        tmp_path, store_url=store_url, extra={"SPOOL_HEALTH_CACHE_SECONDS": "0"}
    )
    with installed(settings), Client(spool_app.app) as client:
        assert client.http.get("/health").status_code == 200
        moto.process.send_signal(signal.SIGSTOP)
        try:
            answer = client.http.get("/health")  # before: about two minutes
            assert answer.status_code == 503, answer.body
            assert SAID.encode() in answer.body
        finally:
            moto.process.send_signal(signal.SIGCONT)
        deadline = time.monotonic() + 150
        while client.http.get("/health").status_code != 200:
            assert time.monotonic() < deadline, "/health never answered 200 again"
            time.sleep(0.5)

"""The result cache against changes made by other processes, with real processes.

An API process (`spool serve --no-worker`) caches a dead job; another process
(the `spool` CLI, or a second `spool serve`) redrives or purges it; the first
API must answer the new state within about a second (the epoch re-check),
never for the cache's whole TTL. On SQLite and on the real Postgres server.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import requests

from chalicelib.clock import SystemClock
from chalicelib.models import Completion, JobState
from chalicelib.storage import open_store
from tests.factories import new_job, token
from tests.pg_support import sqlite_or_postgres
from tests.procs import guarded_env, serving_url

ROOT = Path(__file__).resolve().parents[1]
KEY, TENANT = "proc-key-0123456789", "proc-tenant"
# Far longer than the test takes: only the epoch can make the cache let go.
CACHE_TTL = "600"


def _env(store_url: str) -> dict[str, str]:
    return guarded_env(
        SPOOL_STORE_URL=store_url,
        SPOOL_API_KEYS=f"{KEY}={TENANT}",
        SPOOL_CACHE_TTL=CACHE_TTL,
    )


@contextmanager
def serving(store_url: str) -> Iterator[str]:
    """`spool serve --no-worker` in its own process; yields its base URL."""
    with serving_url(
        "--no-worker", "--threads", "4", env=_env(store_url), stderr=subprocess.STDOUT
    ) as url:
        yield url


def spool(store_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "local.cli", *args],
        cwd=ROOT,
        env=_env(store_url),
        capture_output=True,
        text=True,
        timeout=60,
    )


def bury(store_url: str) -> str:
    """A dead job of TENANT, written by this (third) process."""
    store = open_store(store_url)
    try:
        job = store.add([new_job(SystemClock(), "fail", tenant=TENANT, max_attempts=1)])[0].job
        [claimed] = store.claim(1, 30, ids=[job.id])
        done = Completion(job.id, token(claimed), JobState.DEAD, error="boom")
        assert store.finish([done]) == [True]
        return job.id
    finally:
        store.close()


def status(base: str, job_id: str) -> tuple[int, str | None, str | None]:
    reply = requests.get(f"{base}/status/{job_id}", headers={"X-API-Key": KEY}, timeout=10)
    state = reply.json().get("state") if reply.status_code == 200 else None
    return reply.status_code, reply.headers.get("X-Cache"), state


def cached_dead(base: str, job_id: str) -> None:
    assert status(base, job_id) == (200, "miss", "dead")
    assert status(base, job_id) == (200, "hit", "dead")


def settles(base: str, job_id: str, expected: tuple[int, str | None]) -> tuple[int, str | None]:
    """Poll (bounded) until the API answers `expected` (status, state); the last answer."""
    last: tuple[int, str | None] = (0, None)
    for _ in range(100):  # 100 x 0.1 s: far past the 1 s re-check, far below the TTL
        code, _, state = status(base, job_id)
        last = (code, state)
        if last == expected:
            break
        time.sleep(0.1)
    return last


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    with sqlite_or_postgres(request.param, tmp_path) as url:
        yield url


def test_a_redrive_by_the_cli_reaches_a_cached_api_within_a_second(store_url: str) -> None:
    job_id = bury(store_url)
    with serving(store_url) as base:
        cached_dead(base, job_id)
        redriven = spool(store_url, "dlq", "redrive", job_id)
        assert redriven.returncode == 0, redriven.stderr
        assert settles(base, job_id, (200, "queued")) == (200, "queued")


def test_a_redrive_through_a_second_api_reaches_the_first(store_url: str) -> None:
    job_id = bury(store_url)
    with serving(store_url) as first, serving(store_url) as second:
        cached_dead(first, job_id)
        reply = requests.post(
            f"{second}/dlq/{job_id}/redrive", headers={"X-API-Key": KEY}, timeout=10
        )
        assert reply.status_code == 200 and reply.json()["state"] == "queued"
        assert settles(first, job_id, (200, "queued")) == (200, "queued")


def test_a_purge_by_the_cli_reaches_a_cached_api_within_a_second(store_url: str) -> None:
    job_id = bury(store_url)
    with serving(store_url) as base:
        cached_dead(base, job_id)
        purged = spool(store_url, "purge", "--older-than", "0")
        assert purged.returncode == 0, purged.stderr
        assert settles(base, job_id, (404, None)) == (404, None)

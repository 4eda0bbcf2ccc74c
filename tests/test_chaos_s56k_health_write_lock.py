"""GET /health on SQLite while another program holds the file's write lock.

A `BEGIN IMMEDIATE` left open on another connection (a `sqlite3` shell, a backup
script, a stopped process) makes every enqueue wait its 10 s and then answer 503
"stayed locked"; /health answered 200 "ok" all along, so a load balancer kept
sending jobs that could not be taken. Now /health asks for the turn to write
itself, with a patience of its own well under the writers' (nothing written: BEGIN
IMMEDIATE then ROLLBACK), and answers 503 `store_unavailable` naming the lock,
as it does for a Postgres it cannot reach; once the lock is let go it answers 200.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.crash_handlers import CRASH_JOB_TYPE
from tests.procs import guarded_env, serving_url

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

KEY = "lock-key-0123456789"


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    db = tmp_path / "spool.db"
    env = guarded_env(
        SPOOL_STORE_URL=f"sqlite:///{db}",
        SPOOL_API_KEYS=f"{KEY}=acme",
        SPOOL_HANDLERS="tests.crash_handlers",
    )
    with serving_url("--threads", "4", env=env) as url:
        yield url, db


def test_health_answers_503_while_another_program_holds_the_write_lock(
    served: tuple[str, Path],
) -> None:
    url, db = served
    job = {"type": CRASH_JOB_TYPE, "payload": {}}
    assert httpx.post(f"{url}/enqueue", json=job, headers={"X-API-Key": KEY}).status_code == 201
    assert httpx.get(f"{url}/health").status_code == 200
    holder = sqlite3.connect(db, isolation_level=None)
    try:
        holder.execute("BEGIN IMMEDIATE")
        # Answered before a write would give up (10 s): a probe is never held that long.
        answer = httpx.get(f"{url}/health", timeout=8)
        assert answer.status_code == 503, answer.text
        error = answer.json()["error"]
        assert error["code"] == "store_unavailable"
        assert "locked" in error["message"]
        assert "another" in error["message"]
        assert answer.headers["Retry-After"] == "1"
        holder.execute("ROLLBACK")
    finally:
        holder.close()
    assert httpx.get(f"{url}/health").json() == {"status": "ok", "store": "ok"}
    assert httpx.post(f"{url}/enqueue", json=job, headers={"X-API-Key": KEY}).status_code == 201
    # The probe wrote nothing: the two jobs and nothing else.
    with sqlite3.connect(db) as reader:
        assert reader.execute("SELECT count(*) FROM jobs").fetchone() == (2,)

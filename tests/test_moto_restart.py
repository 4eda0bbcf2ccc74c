"""`spool serve` on DynamoDB + SQS when moto_server is restarted under it.

A restarted moto_server keeps nothing: the table, the queue and the bucket that
create=1 made when `spool serve` started are gone. Spool answers 503 (never 500)
on every route and keeps running; what it says must be true: it told the user to
"add create=1 to SPOOL_STORE_URL", which the URL already held (create=1 acts only
when a process starts), so the fix it named changed nothing.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.moto_proc import MotoServer, moto_server
from tests.procs import guarded_env, spool_serve, stop

pytestmark = [pytest.mark.slow, pytest.mark.aws, pytest.mark.timeout(120)]

KEY = "k-restart-0123456789"


@pytest.fixture
def moto(tmp_path: Path) -> Iterator[MotoServer]:
    with moto_server(tmp_path / "moto.log") as server:
        yield server


def test_a_restarted_moto_server_gets_503_and_a_fix_that_is_not_already_done(
    moto: MotoServer,
) -> None:
    endpoint = f"http://127.0.0.1:{moto.port}"
    url = f"dynamodb://jobs?queue=jobs&bucket=jobs-bucket&endpoint={endpoint}&create=1"
    env = guarded_env(SPOOL_STORE_URL=url, SPOOL_API_KEYS=f"{KEY}=acme")
    served = spool_serve("--no-worker", env=env, stderr=subprocess.DEVNULL)
    try:
        with httpx.Client(base_url=served.url, headers={"X-API-Key": KEY}, timeout=30) as http:
            made = http.post("/enqueue", json={"type": "echo", "payload": {}})
            assert made.status_code == 201
            job_id = made.json()["id"]

            moto.restart()  # same port, nothing in it

            answers = [
                http.get(f"/status/{job_id}"),
                http.post("/enqueue", json={"type": "echo", "payload": {}}),
            ]
            assert served.proc.poll() is None  # still serving
    finally:
        stop(served.proc)
    for answer in answers:
        assert answer.status_code == 503, answer.text
        error = answer.json()["error"]
        assert error["code"] == "store_not_migrated"
        message = error["message"]
        assert "'jobs' does not exist" in message
        assert "add create=1" not in message  # it is there already
        assert "start" in message and "again" in message  # what does make it again

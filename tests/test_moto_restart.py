"""`spool serve` on DynamoDB + SQS when moto_server is restarted under it.

A restarted moto_server keeps nothing: the table, the queue and the bucket that
create=1 made when `spool serve` started are gone. Spool answers 503 (never 500)
on every route and keeps running; what it says must be true: it told the user to
"add create=1 to SPOOL_STORE_URL", which the URL already held (create=1 acts only
when a process starts), so the fix it named changed nothing.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.procs import guarded_env, spool_serve, stop

pytestmark = [pytest.mark.slow, pytest.mark.aws, pytest.mark.timeout(120)]

BIN = Path(sys.executable).parent
KEY = "k-restart-0123456789"


def start_moto(port: int = 0) -> tuple[subprocess.Popen[str], int]:
    """moto_server on 127.0.0.1 (PORT, or a free one), once it says it runs."""
    process = subprocess.Popen(
        [str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
        env=guarded_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    assert process.stdout is not None
    for line in process.stdout:
        found = re.search(r"Running on http://127\.0\.0\.1:(\d+)", line)
        if found:
            return process, int(found.group(1))
    stop(process)
    pytest.fail("moto_server exited before it ran")


class Moto:
    """A moto_server that a test can restart on the same port."""

    def __init__(self) -> None:
        self.process, self.port = start_moto()

    def restart(self) -> None:
        stop(self.process)
        deadline = time.monotonic() + 30
        while True:  # the port may take a moment to be free again
            try:
                self.process, _ = start_moto(self.port)
                return
            except BaseException:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)


@pytest.fixture
def moto() -> Iterator[Moto]:
    server = Moto()
    try:
        yield server
    finally:
        stop(server.process)


def test_a_restarted_moto_server_gets_503_and_a_fix_that_is_not_already_done(
    moto: Moto,
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

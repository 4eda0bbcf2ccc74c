"""`spool serve` on a store whose jobs travel by SQS (DynamoDB + SQS on moto_server)
stops as it says: SIGTERM finishes the batch in hand, however long its jobs run
(up to their handler timeouts), as the emulator does on SQLite.

Its SQS poller was joined for 30 s at most: a job longer than that was cut off when
the process exited (it printed "finishing running requests and jobs", then
"stopped"), and stayed `running` with its attempt spent until its lease lapsed.
"""

from __future__ import annotations

import signal
import subprocess
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from chalicelib.storage.dynamodb import DynamoConfig, create_resources, make_clients
from tests.moto_proc import moto_server
from tests.procs import ROOT, guarded_env, spool_serve, stop

pytestmark = [pytest.mark.slow, pytest.mark.aws, pytest.mark.timeout(240)]

KEY = "k-sqs-stop-0123456789"
# Longer than the 30 s the poller used to be given at a stop.
JOB_SECONDS = 35

HANDLERS = textwrap.dedent(
    """
    import os
    import time

    from chalicelib.handlers import handler


    @handler("long_one", timeout=120, max_attempts=3)
    def long_one(payload):
        with open(os.path.join(os.environ["RECORD_DIR"], "started"), "a") as out:
            out.write("x")
        time.sleep(payload["seconds"])
        return {"slept": payload["seconds"]}
    """
)


@pytest.fixture
def moto_endpoint(tmp_path: Path) -> Iterator[str]:
    with moto_server(tmp_path / "moto.log") as moto:
        yield moto.endpoint


def test_sigterm_lets_a_long_sqs_job_finish(tmp_path: Path, moto_endpoint: str) -> None:
    url = f"dynamodb://stop?queue=stop&bucket=stop-bucket&endpoint={moto_endpoint}"
    config = DynamoConfig.from_url(url)
    create_resources(config, *make_clients(config))
    (tmp_path / "long_jobs.py").write_text(HANDLERS)
    env = guarded_env(
        PYTHONPATH=f"{tmp_path}:{ROOT}",
        SPOOL_HANDLERS="long_jobs",
        SPOOL_STORE_URL=url,
        SPOOL_API_KEYS=f"{KEY}=acme",
        RECORD_DIR=str(tmp_path),
    )
    served = spool_serve(env=env, stderr=subprocess.DEVNULL)
    try:
        with httpx.Client(base_url=served.url, headers={"X-API-Key": KEY}, timeout=30) as http:
            job = {"type": "long_one", "payload": {"seconds": JOB_SECONDS}}
            job_id = http.post("/enqueue", json=job).json()["id"]
            deadline = time.monotonic() + 60
            while not (tmp_path / "started").exists():
                assert time.monotonic() < deadline, "the job never started"
                assert served.proc.poll() is None
                time.sleep(0.1)
            served.proc.send_signal(signal.SIGTERM)
            served.proc.wait(JOB_SECONDS + 60)
    finally:
        stop(served.proc)
    assert served.proc.returncode == 0
    # Read back through a server of its own: the job finished before the stop ended.
    reader = spool_serve("--no-worker", env=env, stderr=subprocess.DEVNULL)
    try:
        with httpx.Client(base_url=reader.url, headers={"X-API-Key": KEY}, timeout=30) as http:
            view = http.get(f"/status/{job_id}").json()
    finally:
        stop(reader.proc)
    assert (view["state"], view["attempts"]) == ("succeeded", 1)
    assert view["result"] == {"slept": JOB_SECONDS}
    assert (tmp_path / "started").read_text() == "x"  # it ran once

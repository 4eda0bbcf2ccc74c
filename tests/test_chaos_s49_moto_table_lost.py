"""`spool worker` on DynamoDB (moto_server) when its table is deleted under it: what
its last lines say must be true.

Found by a chaos run (s48), reproduced by helper B (s49): a `sleep` job running,
the table deleted with DeleteTable. The worker stopped, rightly ("the worker
stops: the DynamoDB table 'jobs' does not exist ... the endpoint has lost it since
(a restarted moto_server keeps nothing) ...", which named only a restart as the
way a table goes), and then said:

    store still unavailable after 5s; 1 outcomes not written (their jobs come
    back when their leases expire): j_...
    job outcome_unwritten: the store is unavailable, so this attempt's outcome
    (succeeded) could not be written; it runs again once its lease expires
    could not sign this worker off (it drops out in a minute): the DynamoDB
    table 'jobs' does not exist: ... (the whole reason, a third time)

The store was not unavailable but refusing this worker; the worker waited no
5 s (a refusal ends the tries at once); the job comes back from no lease (its
table, and it, are gone); and there is no beat left to drop out. They now say the
store refused the outcomes, that the jobs run again only if the store still
holds them, the time actually spent, and that the sign-off was refused too,
pointing at the reason already given.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest

from chalicelib.models import JobState
from chalicelib.storage import open_store
from tests.factories import new_job
from tests.moto_proc import moto_server
from tests.procs import ROOT, guarded_env, stop

pytestmark = [pytest.mark.aws, pytest.mark.timeout(120)]


@pytest.fixture
def moto_port(tmp_path: Path) -> Iterator[int]:
    with moto_server(tmp_path / "moto.log") as moto:
        yield moto.port


def _until(check: object, what: str, timeout: float = 30) -> None:
    assert callable(check)
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def test_a_worker_whose_table_is_deleted_says_what_became_of_its_job(
    tmp_path: Path, moto_port: int
) -> None:
    endpoint = f"http://127.0.0.1:{moto_port}"
    url = f"dynamodb://jobs?queue=jobs&bucket=jobs-bucket&endpoint={endpoint}&create=1"
    env = guarded_env(SPOOL_STORE_URL=url, SPOOL_DEMO_HANDLERS="true")
    store = open_store(url)  # creates the table, queue and bucket
    log = tmp_path / "worker.log"
    with log.open("w") as sink:
        worker = subprocess.Popen(
            [sys.executable, "-m", "local.cli", "worker", "--concurrency", "2"],
            cwd=ROOT, env=env, stdout=sink, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
    try:
        [added] = store.add([new_job(store.clock, "sleep", payload={"seconds": 3})])
        job_id = added.job.id

        def running() -> bool:
            job = store.get(job_id)
            return job is not None and job.state is JobState.RUNNING

        _until(running, "the worker to start the job")
        boto3.client(
            "dynamodb",
            endpoint_url=endpoint,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        ).delete_table(TableName="jobs")
        worker.wait(60)
    finally:
        stop(worker)
        store.close()
    assert worker.returncode == 1
    text = log.read_text()
    lines = text.splitlines()
    [stops] = [x for x in lines if "the worker stops: the DynamoDB table 'jobs'" in x]
    assert "deleted, or a restarted moto_server" in stops, stops  # not only a restart
    [let_go] = [x for x in lines if "outcomes not written" in x or "outcome not written" in x]
    assert job_id in let_go
    assert "unavailable" not in let_go and "after 5s" not in let_go, let_go
    assert "refused" in let_go and "only if the store still holds" in let_go, let_go
    [event] = [x for x in lines if "job outcome_unwritten" in x]
    assert "the store is unavailable" not in event, event
    assert "if the store still holds the job, it runs again" in event, event
    assert "drops out in a minute" not in text
    # The reason is said where the worker stops and where the process exits, not
    # a third time by the sign-off.
    assert text.count("create=1 makes it only when a process starts") == 2, text

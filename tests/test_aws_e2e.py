"""The deployed shape, offline: moto_server on 127.0.0.1 plays DynamoDB, SQS and S3;
`spool serve` serves app.py's API against it (the API function); the local SQS
poller feeds the queue to app.py's SQS handler as Lambda would (the worker
function). Three processes, as on AWS; every request stays on 127.0.0.1.
"""

from __future__ import annotations

import queue
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from chalicelib.storage.dynamodb import DynamoConfig, create_resources, make_clients
from tests.moto_proc import moto_server
from tests.procs import guarded_env, stop

pytestmark = [pytest.mark.slow, pytest.mark.aws, pytest.mark.timeout(240)]

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
KEY, TENANT = "e2e-key-0123456789", "tenant-e2e"
STARTUP = 60.0


@pytest.fixture(scope="module")
def moto_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with moto_server(tmp_path_factory.mktemp("moto") / "moto.log") as moto:
        yield moto.endpoint


@pytest.fixture(scope="module")
def store_url(moto_endpoint: str) -> str:
    url = f"dynamodb://e2e?queue=e2e&bucket=e2e-bucket&endpoint={moto_endpoint}"
    config = DynamoConfig.from_url(url)
    ddb, sqs, s3 = make_clients(config)
    create_resources(config, ddb, sqs, s3)
    return url


def started(process: subprocess.Popen[str], pattern: str, keep: bool = False) -> re.Match[str]:
    """Read the process's output until a line matches (bounded in time); with keep, the
    match is made against everything read so far (multiline), so earlier lines can be read."""
    lines: queue.Queue[str] = queue.Queue()
    assert process.stdout is not None
    stream = process.stdout

    def pump() -> None:
        for line in stream:
            lines.put(line)

    threading.Thread(target=pump, daemon=True).start()
    deadline = time.monotonic() + STARTUP
    seen = []
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=0.5)
        except queue.Empty:
            if process.poll() is not None:
                break
            continue
        seen.append(line)
        match = re.search(pattern, "".join(seen) if keep else line, re.MULTILINE)
        if match:
            return match
    pytest.fail(f"process did not start; output: {''.join(seen)!r}")


@pytest.fixture(scope="module")
def system(store_url: str) -> Iterator[str]:
    """The API process and the worker process, both on the moto endpoint."""
    env = guarded_env(SPOOL_STORE_URL=store_url, SPOOL_API_KEYS=f"{KEY}={TENANT}")
    api = subprocess.Popen(
        [str(BIN / "spool"), "serve", "--no-worker", "--port", "0"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    worker = subprocess.Popen(
        [str(BIN / "python"), "-m", "local.sqs_poller", "--max-seconds", "200"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        base = started(api, r"serving app\.py on (http://\S+)").group(1)
        started(worker, r"polling ")
        yield base
    finally:
        stop(worker)
        stop(api)


def call(method: str, url: str, **kwargs: Any) -> requests.Response:
    return requests.request(method, url, headers={"X-API-Key": KEY}, timeout=30, **kwargs)


def wait_for(base: str, job_id: str, states: set[str], seconds: float = 60) -> dict[str, Any]:
    """The job's view once it is in one of `states`. Every view read on the way is
    whole: a terminal one has its finished_at (Spool sets it in the same write as the
    state). Plain moto_server once let a read see a job `dead` whose finish had not yet
    set it (CI, stop 59), and this loop used to wait for it; the tests' moto_server
    (tests/moto_server_main.py) applies each DynamoDB request whole, as DynamoDB does."""
    deadline = time.monotonic() + seconds
    view: dict[str, Any] = {}
    while time.monotonic() < deadline:
        reply = call("GET", f"{base}/status/{job_id}")
        assert reply.status_code == 200, reply.text
        view = reply.json()
        if view["state"] in ("succeeded", "dead", "cancelled"):
            assert view.get("finished_at") is not None, f"half a write read: {view}"
        if view["state"] in states:
            return view
        time.sleep(0.2)
    pytest.fail(f"job {job_id} never reached {states}; last seen {view}")


def test_an_enqueued_job_runs_through_sqs_and_succeeds(system: str) -> None:
    reply = call("POST", f"{system}/enqueue", json={"type": "echo", "payload": {"hi": "aws"}})
    assert reply.status_code == 201, reply.text
    done = wait_for(system, reply.json()["id"], {"succeeded", "dead"})
    assert done["state"] == "succeeded"
    assert done["result"] == {"hi": "aws"} and done["attempts"] == 1


def test_an_always_failing_job_dies_after_max_attempts_and_is_redriven(
    system: str, store_url: str
) -> None:
    body = {"type": "fail", "payload": {"always": True}, "max_attempts": 3}
    reply = call("POST", f"{system}/enqueue", json=body)
    assert reply.status_code == 201, reply.text
    job_id = reply.json()["id"]
    dead = wait_for(system, job_id, {"dead", "succeeded"})
    assert (dead["state"], dead["attempts"]) == ("dead", 3)
    assert "planned failure (attempt 3)" in dead["last_error"]
    listed = call("GET", f"{system}/dlq").json()["jobs"]
    assert job_id in [j["id"] for j in listed]

    redriven = call("POST", f"{system}/dlq/{job_id}/redrive")
    assert redriven.status_code == 200, redriven.text
    assert redriven.json()["state"] == "queued" and redriven.json()["attempts"] == 0
    again = wait_for(system, job_id, {"dead"})  # a fresh budget, spent again
    assert again["attempts"] == 3 and again["finished_at"] > dead["finished_at"]

    # Every message was consumed: none lingers, none went to SQS's own DLQ.
    config = DynamoConfig.from_url(store_url)
    _, sqs, _ = make_clients(config)
    for name in ("e2e", "e2e-dlq"):
        url = sqs.get_queue_url(QueueName=name)["QueueUrl"]
        attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
        waiting = sum(
            int(attrs[k])
            for k in (
                "ApproximateNumberOfMessages",
                "ApproximateNumberOfMessagesNotVisible",
                "ApproximateNumberOfMessagesDelayed",
            )
        )
        assert waiting == 0, (name, attrs)


def test_spool_serve_alone_runs_jobs_on_a_store_that_delivers_by_sqs(moto_endpoint: str) -> None:
    """Its emulated worker only invoked drain_due, which on DynamoDB hands due jobs to
    SQS: every job stayed queued while the banner said a worker ran. It now feeds app.py's
    SQS function from the queue, as `python -m local.sqs_poller` does beside `--no-worker`."""
    url = f"dynamodb://solo?queue=solo&bucket=solo-bucket&endpoint={moto_endpoint}&create=1"
    env = guarded_env(SPOOL_STORE_URL=url, SPOOL_API_KEYS=f"{KEY}={TENANT}")
    env["SPOOL_DEMO_HANDLERS"] = "true"
    api = subprocess.Popen(
        [str(BIN / "spool"), "serve", "--port", "0"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        # The banner's worker line comes after the address: read up to it, then both.
        shown = started(api, r"^  worker  (.*)$", keep=True)
        served = re.search(r"serving app\.py on (http://\S+)", shown.string)
        assert served is not None, shown.string
        base = served.group(1)
        assert re.search(r"emulated \(app\.py \S+ fed from \S+/solo;", shown.group(1)), shown
        reply = call("POST", f"{base}/enqueue", json={"type": "echo", "payload": {"n": 1}})
        assert reply.status_code == 201, reply.text
        done = wait_for(base, reply.json()["id"], {"succeeded", "dead"})
        assert done["state"] == "succeeded" and done["result"] == {"n": 1}
    finally:
        stop(api)

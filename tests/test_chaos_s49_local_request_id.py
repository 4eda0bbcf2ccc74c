"""`spool serve`'s built-in worker is a local process: its lines carry no Lambda
request id, and its attempts name the process, not a Lambda invocation.

Found by a chaos run (s48, reproduced by helper B, s49): every "job succeeded"
line of `spool serve` ended in `worker=lambda:<uuid> aws_request_id=<uuid>`, and
the attempt history said the same worker. No Lambda ran: the emulator invokes
app.py's scheduled handler with chalice's local LambdaContext, which makes up a
uuid4 per invocation, and the events path takes any context's aws_request_id as
a Lambda invocation's (the worker id and every log line of the invocation). A
person following it looked for a CloudWatch stream that does not exist, and
could not tell which local process ran the job. The emulator's and the local SQS
poller's contexts now carry no request id, so the worker is host:pid:tag, as
`spool worker`'s is, and no line carries aws_request_id.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import requests

from chalicelib import worker_id
from local import emulator, sqs_poller
from tests.procs import guarded_env, spool_serve_logged, stop

pytestmark = pytest.mark.timeout(120)

KEY, TENANT = "local-rid-key-0123456789", "default"
HEADERS = {"X-API-Key": KEY}


def _finished(base: str, job_id: str) -> dict[str, object]:
    """The job's status with attempts once it finished (bounded poll: 30 s)."""
    body: dict[str, object] = {}
    for _ in range(300):
        reply = requests.get(f"{base}/status/{job_id}?attempts=true", headers=HEADERS, timeout=10)
        body = reply.json()
        if body.get("state") in ("succeeded", "dead"):
            return body
        time.sleep(0.1)
    raise AssertionError(f"{job_id} did not finish: {body}")


def test_the_built_in_worker_s_lines_and_attempts_name_no_lambda(tmp_path: Path) -> None:
    log = tmp_path / "serve.log"
    env = guarded_env(
        SPOOL_STORE_URL=f"sqlite:///{tmp_path}/spool.db",
        SPOOL_API_KEYS=f"{KEY}={TENANT}",
        SPOOL_DEMO_HANDLERS="true",
    )
    served = spool_serve_logged(log, "--threads", "4", env=env)
    try:
        made = requests.post(
            f"{served.url}/enqueue",
            json={"type": "echo", "payload": {"n": 1}},
            headers=HEADERS,
            timeout=10,
        )
        assert made.status_code == 201, made.text
        job_id = made.json()["id"]
        body = _finished(served.url, job_id)
    finally:
        stop(served.proc)
    assert body["state"] == "succeeded"
    attempts = body["attempt_history"]
    assert isinstance(attempts, list) and attempts
    ran_by = str(attempts[-1]["worker"])
    assert not ran_by.startswith("lambda:"), ran_by
    assert ran_by.split(":")[1] == str(served.proc.pid), ran_by  # host:pid:tag
    lines = log.read_text().splitlines()
    [done] = [line for line in lines if "job succeeded" in line and job_id in line]
    assert "aws_request_id" not in done, done
    assert f"worker={ran_by}" in done, done
    assert not [line for line in lines if "aws_request_id" in line]


@pytest.mark.parametrize(
    "made",
    [
        lambda: emulator.context(emulator.SCHEDULE_FUNCTION),
        lambda: emulator.context(emulator.SQS_FUNCTION, sqs_poller.FUNCTION_TIMEOUT_MS),
    ],
    ids=["scheduled", "sqs"],
)
def test_a_local_invocation_s_context_names_no_lambda_request(made: object) -> None:
    """What the events path reads (local/sqs_poller.py makes its contexts here too): a
    context with no aws_request_id leaves the worker named after the process and the
    log lines without an id."""
    assert callable(made)
    context = made()
    assert not context.aws_request_id
    assert context.get_remaining_time_in_millis() > 0
    assert not worker_id.current().startswith("lambda:")

"""/health stops saying the SQS queue refused job ids once the queue answers again.

Found in stop 59 with `spool serve` on moto_server behind a proxy that dropped the
answers of SendMessageBatch for one enqueue (the path to SQS failing for a moment):
/health then answered 503 "the SQS queue refused job ids (ConnectionClosedError
...)" for a whole minute with SQS long back, unless an enqueue happened to send
something, and it said neither when that was nor that SQS had refused nothing. The
same for a queue deleted and made again. A failure where SQS gave no answer, or
said the queue was missing, is now shown only while the queue still does not
answer (a GetQueueAttributes, asked only while a failure is shown); the message
says how long ago the send failed and why. A refusal by SQS itself (the entries
refused, access denied) lasts its minute, as before, unless a send succeeds.

Everything crosses real sockets: moto_server, the proxy (tests/fault_proxy.py) and a
`spool serve` process.
"""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import boto3
import httpx
import pytest

from tests.fault_proxy import FaultProxy
from tests.moto_proc import moto_server
from tests.procs import guarded_env, spool_serve, stop

pytestmark = [pytest.mark.aws, pytest.mark.timeout(120)]

KEY = "k-s59a-health-after-sqs-01"
SEND = b"AmazonSQS.SendMessageBatch"


@dataclass
class Served:
    http: httpx.Client
    proxy: FaultProxy
    moto_url: str


@pytest.fixture
def served(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Served]:
    cache = getattr(request, "param", "0")  # SPOOL_HEALTH_CACHE_SECONDS
    with moto_server(tmp_path / "moto.log") as moto:
        proxy = FaultProxy(moto.port)
        env = guarded_env(
            SPOOL_STORE_URL=f"dynamodb://jobs?queue=jobs&create=1&endpoint={proxy.url}",
            SPOOL_API_KEYS=f"{KEY}=acme",
            SPOOL_HANDLERS="chalicelib.builtin.demo",
            SPOOL_HEALTH_CACHE_SECONDS=cache,
        )
        server = spool_serve("--no-worker", env=env, stderr=subprocess.DEVNULL)
        try:
            with httpx.Client(base_url=server.url, headers={"X-API-Key": KEY}, timeout=60) as http:
                yield Served(http, proxy, moto.endpoint)
        finally:
            stop(server.proc)
            proxy.close()


def enqueue(http: httpx.Client) -> None:
    answer = http.post("/enqueue", json={"type": "echo", "payload": {"n": 1}})
    assert answer.status_code in (200, 201), answer.text


def test_health_is_ok_again_once_the_path_to_sqs_is_back(served: Served) -> None:
    assert served.http.get("/health").status_code == 200
    with served.proxy.losing_replies(SEND) as lost:
        enqueue(served.http)  # stored; its id's send lost its answer
    assert lost[0] >= 1
    # SQS answers again; nothing has been sent since.
    answer = served.http.get("/health")
    assert answer.status_code == 200, answer.text


def test_health_names_when_and_why_while_the_queue_is_gone_and_recovers(
    served: Served,
) -> None:
    sqs = boto3.client("sqs", endpoint_url=served.moto_url)
    url = sqs.get_queue_url(QueueName="jobs")["QueueUrl"]
    enqueue(served.http)  # the queue's URL is known to the server
    sqs.delete_queue(QueueUrl=url)
    enqueue(served.http)  # stored; SQS says the queue does not exist
    answer = served.http.get("/health")
    assert answer.status_code == 503, answer.text
    message = answer.json()["error"]["message"]
    assert "s ago" in message and "NonExistentQueue" in message, message
    sqs.create_queue(QueueName="jobs")
    answer = served.http.get("/health")
    assert answer.status_code == 200, answer.text


@pytest.mark.parametrize("served", ["60"], indirect=True)  # the table's read kept a minute
def test_a_hung_queue_is_named_within_the_health_deadline(served: Served) -> None:
    """The probe asks once, with a short timeout: with the store's client (five tries,
    20 s each) a queue that took the request and never answered held /health's check
    past its 3 s, and /health blamed the job store ("gave no answer")."""
    assert served.http.get("/health").status_code == 200  # the table's read, kept
    with served.proxy.losing_replies(SEND):
        enqueue(served.http)
    with socket.create_server(("127.0.0.1", 0)) as hole:  # takes connections, never answers
        served.proxy.upstream_port = hole.getsockname()[1]
        answer = served.http.get("/health")
    assert answer.status_code == 503, answer.text
    message = answer.json()["error"]["message"]
    assert "sending job ids to the SQS queue failed" in message, message
    assert "does not answer now" in message, message

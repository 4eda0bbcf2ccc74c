"""A DynamoDB write whose reply was lost says it may have been applied, as Postgres's does.

Found in stop 58 with `spool serve` on moto_server behind a proxy that forwards each
TransactWriteItems and drops its answer: the job was stored, and POST /enqueue
answered a plain 503 "AWS is unreachable: ConnectionClosedError", which reads as
"nothing was stored". A client retrying without a key made the job twice; the
enqueue token gate gave back the token of a job the table held (it reads a write
back only when the store says its outcome is unknown, UncertainWrite); a worker's
claim or outcome write said nothing of what becomes of its jobs. The store now
raises UncertainWrite for a write whose request was sent and whose answer was lost
or a server error; a read's failure, and a write's that never left the process
(nothing listens at the endpoint), stay a plain 503.

Everything crosses real sockets: moto_server, the proxy (tests/fault_proxy.py) and,
for the API, a `spool serve` process.
"""

from __future__ import annotations

import json
import logging
import socket
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from chalicelib.clock import SystemClock
from chalicelib.errors import StoreUnavailable, UncertainWrite
from chalicelib.handlers import Registry
from chalicelib.storage.dynamodb import DynamoConfig, DynamoStore, create_resources, make_clients
from chalicelib.worker import Worker, WorkerConfig
from tests.factories import new_job
from tests.fault_proxy import FaultProxy
from tests.moto_proc import moto_server
from tests.procs import guarded_env, spool_serve, stop

pytestmark = [pytest.mark.slow, pytest.mark.aws, pytest.mark.timeout(180)]

KEY = "k-s58b-lost-replies-0123"
LIMITED_KEY = "k-s58b-limited-tenant-01"
TRANSACT = b"DynamoDB_20120810.TransactWriteItems"
UPDATE = b"DynamoDB_20120810.UpdateItem"
READ_ONE = b"DynamoDB_20120810.Query"
MAY_HAVE = "may have been applied"
LEASE = 40.0
CLIENT_WORDS = ("idempotency_key", "before retrying", "retry your request")


@dataclass
class Aws:
    """moto_server, a proxy in front of it, and a store that reaches it directly."""

    moto_url: str
    proxy: FaultProxy
    table: str

    def url(self, through_proxy: bool = True) -> str:
        endpoint = self.proxy.url if through_proxy else self.moto_url
        return f"dynamodb://{self.table}?endpoint={endpoint}"

    def direct(self) -> DynamoStore:
        return DynamoStore(DynamoConfig.from_url(self.url(through_proxy=False)))

    def proxied(self) -> DynamoStore:
        return DynamoStore(DynamoConfig.from_url(self.url()))


@pytest.fixture
def aws(tmp_path: Path) -> Iterator[Aws]:
    with moto_server(tmp_path / "moto.log") as moto:
        proxy = FaultProxy(moto.port)
        try:
            config = DynamoConfig.from_url(f"dynamodb://jobs?endpoint={moto.endpoint}")
            create_resources(config, make_clients(config)[0])
            yield Aws(moto.endpoint, proxy, "jobs")
        finally:
            proxy.close()


@pytest.fixture
def api(aws: Aws, tmp_path: Path) -> Iterator[httpx.Client]:
    limits = {"limited": {"rate": "1/h", "burst": 1}}
    env = guarded_env(
        SPOOL_STORE_URL=aws.url(),
        SPOOL_API_KEYS=f"{KEY}=acme,{LIMITED_KEY}=limited",
        SPOOL_HANDLERS="chalicelib.builtin.demo",
        SPOOL_TENANT_LIMITS=json.dumps(limits),
    )
    served = spool_serve("--no-worker", env=env, stderr=subprocess.DEVNULL)
    try:
        with httpx.Client(base_url=served.url, headers={"X-API-Key": KEY}, timeout=60) as http:
            yield http
    finally:
        stop(served.proc)


def stored_payloads(store: DynamoStore) -> list[Any]:
    items = store.ddb.scan(TableName=store.table)["Items"]
    return sorted(
        (json.loads(item["payload"]["S"]) for item in items if "payload" in item), key=str
    )


BODIES: dict[str, dict[str, Any]] = {
    "single": {"type": "echo", "payload": {"n": 1}},
    "keyed": {"type": "echo", "payload": {"n": 1}, "idempotency_key": "once"},
    "batch": {
        "jobs": [
            {"type": "echo", "payload": {"n": 1}},
            {"type": "echo", "payload": {"n": 2}, "idempotency_key": "twice"},
        ]
    },
}
# What the table holds after the lost reply, and after the retry the 503 advises (a
# mixed batch stores its keyed jobs first: the keyless one is stored by the retry).
APPLIED = {"single": [{"n": 1}], "keyed": [{"n": 1}], "batch": [{"n": 2}]}
RETRIED = {"keyed": [{"n": 1}], "batch": [{"n": 1}, {"n": 2}]}


@pytest.mark.parametrize("shape", list(BODIES))
def test_an_enqueue_whose_reply_was_lost_says_it_may_have_been_applied(
    aws: Aws, api: httpx.Client, shape: str
) -> None:
    with aws.proxy.losing_replies(TRANSACT) as lost:
        answer = api.post("/enqueue", json=BODIES[shape])
    assert lost[0] >= 1
    assert answer.status_code == 503, answer.text
    error = answer.json()["error"]
    assert error["code"] == "store_unavailable"
    assert MAY_HAVE in error["message"] and "idempotency_key" in error["message"], error
    assert "ConnectionClosedError" in error["message"], error
    direct = aws.direct()
    assert stored_payloads(direct) == APPLIED[shape]
    if shape in RETRIED:  # the retry with the same keys answers the stored job
        again = api.post("/enqueue", json=BODIES[shape])
        assert again.status_code in (200, 201), again.text
        assert stored_payloads(direct) == RETRIED[shape]


def test_a_job_stored_by_a_write_whose_reply_was_lost_costs_its_token(
    aws: Aws, api: httpx.Client
) -> None:
    """The gate reads the job back: the token it took stays spent (burst 1), the
    retry with the key is answered free, and the next new job waits."""
    limited = {"X-API-Key": LIMITED_KEY}
    body = {"type": "echo", "payload": {"n": 1}, "idempotency_key": "paid"}
    with aws.proxy.losing_replies(TRANSACT):
        first = api.post("/enqueue", json=body, headers=limited)
    assert first.status_code == 503 and MAY_HAVE in first.text, first.text
    retry = api.post("/enqueue", json=body, headers=limited)
    assert retry.status_code == 200 and retry.json()["created"] is False, retry.text
    other = api.post("/enqueue", json={"type": "echo", "payload": {"n": 2}}, headers=limited)
    assert other.status_code == 429, other.text
    assert stored_payloads(aws.direct()) == [{"n": 1}]


def test_a_read_whose_reply_was_lost_stays_a_plain_503(aws: Aws, api: httpx.Client) -> None:
    made = api.post("/enqueue", json=BODIES["single"])
    assert made.status_code == 201, made.text
    with aws.proxy.losing_replies(READ_ONE):
        answer = api.get(f"/status/{made.json()['id']}")
    assert answer.status_code == 503, answer.text
    assert MAY_HAVE not in answer.text and "AWS is unreachable" in answer.text, answer.text


def test_a_write_that_never_reached_aws_stays_a_plain_503() -> None:
    """Nothing listens at the endpoint: the request never left, nothing was stored."""
    with socket.socket() as placeholder:
        placeholder.bind(("127.0.0.1", 0))
        port = placeholder.getsockname()[1]  # bound, never listening: refused
        store = DynamoStore(
            DynamoConfig.from_url(f"dynamodb://jobs?endpoint=http://127.0.0.1:{port}")
        )
        with pytest.raises(StoreUnavailable) as raised:
            store.add([new_job(SystemClock())])
    assert not isinstance(raised.value, UncertainWrite), raised.value
    assert "AWS is unreachable: EndpointConnectionError" in str(raised.value)


def worker_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name.startswith("spool")]


def assert_no_client_advice(lines: list[str]) -> None:
    for line in lines:
        assert not any(words in line for words in CLIENT_WORDS), line


def test_a_claim_whose_reply_was_lost_says_its_jobs_run_when_leases_lapse(
    aws: Aws, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    registry = Registry()
    registry.handler("echo")(lambda payload: payload)
    store = aws.proxied()
    store.add([new_job(store.clock)])
    worker = Worker(store, registry, WorkerConfig(concurrency=1, lease_seconds=LEASE))
    try:
        worker._beat(force=True)  # the beat's write before the fault: the claim meets it
        caplog.clear()
        with aws.proxy.losing_replies(UPDATE), pytest.raises(StoreUnavailable):
            worker.drain()
    finally:
        worker.close()
    # The heartbeat's UpdateItem may meet the fault first: it has its own line.
    said = [line for line in worker_lines(caplog) if "a claim:" in line]
    assert said, worker_lines(caplog)
    assert MAY_HAVE in said[0], said[0]
    assert f"run again once their leases lapse (in at most {LEASE:g}s)" in said[0], said[0]
    assert_no_client_advice(worker_lines(caplog))


class _DisarmOnOutage(logging.Handler):
    """Stops losing replies once the worker has said its write failed: its next
    try of the same outcome is answered."""

    def __init__(self, proxy: FaultProxy) -> None:
        super().__init__(logging.WARNING)
        self.proxy = proxy

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage().startswith("store unavailable"):
            self.proxy.disarm()


def test_an_outcome_whose_reply_was_lost_says_it_is_written_again(
    aws: Aws, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    store = aws.proxied()

    def echo_then_lose(payload: object) -> object:
        aws.proxy.lose_replies(TRANSACT)  # until the worker says so (_DisarmOnOutage)
        return payload

    registry = Registry()
    registry.handler("echo")(echo_then_lose)
    job_id = store.add([new_job(store.clock)])[0].job.id
    disarm = _DisarmOnOutage(aws.proxy)
    logging.getLogger("spool").addHandler(disarm)
    worker = Worker(store, registry, WorkerConfig(concurrency=1, lease_seconds=LEASE))
    caplog.clear()
    try:
        worker.drain()
    finally:
        logging.getLogger("spool").removeHandler(disarm)
        aws.proxy.disarm()
        worker.close()
    job = aws.direct().get(job_id)
    assert job is not None and job.state.value == "succeeded", job
    assert job.attempts == 1, job
    said = [line for line in worker_lines(caplog) if line.startswith("store unavailable")]
    assert said, worker_lines(caplog)
    assert "outcome" in said[0] and MAY_HAVE in said[0], said[0]
    assert "held and written again once the store answers" in said[0], said[0]
    assert_no_client_advice(worker_lines(caplog))


def test_a_write_whose_first_try_landed_before_aws_went_away_may_have_been_applied(
    aws: Aws,
) -> None:
    """The first try's answer is lost and the path to AWS then goes down: botocore's
    later tries are refused before sending (EndpointConnectionError), and the error
    the call ends with is theirs. It said "AWS is unreachable", as if nothing had
    been sent, with the job stored."""
    store = aws.proxied()
    job = new_job(store.clock)
    aws.proxy.arm(TRANSACT, "after", aws.proxy.close)  # then nothing listens there
    with pytest.raises(UncertainWrite) as raised:
        store.add([job])
    assert "EndpointConnectionError" in str(raised.value), raised.value
    assert MAY_HAVE in str(raised.value)
    stored = aws.direct().get(job.id)
    assert stored is not None and stored.id == job.id


def test_a_keyless_enqueue_whose_first_answer_was_lost_is_answered_once(
    aws: Aws, api: httpx.Client
) -> None:
    """One answer lost: botocore sends the transaction again and moto_server, which
    does not match ClientRequestToken as DynamoDB does, refuses it, the job being
    there. The enqueue answered 503 "idempotency keys kept changing under this add"
    with its job stored; it is now answered as the job it stored."""
    aws.proxy.arm(TRANSACT, "after")
    answer = api.post("/enqueue", json=BODIES["single"])
    assert aws.proxy.fired.is_set()
    assert answer.status_code == 201, answer.text
    assert answer.json()["created"] is True
    assert stored_payloads(aws.direct()) == [{"n": 1}]

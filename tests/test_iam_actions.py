"""Every AWS call each Lambda function makes is one its role allows (infra/generate.py).

The templates are least-privilege by hand; moto checks no IAM, so a call the role
lacks passes every other test and fails only on AWS. Here each function's work is
driven in process against moto (the API's routes, the SQS worker with retries,
dead letters, webhooks and offloaded payloads, the schedule with its webhook
deliveries), every botocore call is recorded by the function that made it, and
each is read as the IAM actions AWS checks for it: a transaction or batch write
needs the action of each item inside it (a Put inside TransactWriteItems needs
dynamodb:PutItem).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import boto3
import botocore.client
import pytest
from chalice.test import Client
from moto import mock_aws

import app as spool_app
from chalicelib import events, secret_parameters
from chalicelib.runtime import Runtime
from chalicelib.storage.dynamodb import DynamoStore
from chalicelib.webhooks import signing
from infra.generate import ACTIONS, BUCKET_ACTIONS, FUNCTIONS, KEY_ACTIONS, WEBHOOK_ROLES
from local.emulator import context, scheduled_event
from tests.apikit import OPERATOR_KEY, TENANT_A, Api, installed, settings_for
from tests.factories import token
from tests.test_aws_events import QUEUE, poller

SECRET = signing.new_secret()
_RESOURCE_KIND = {"dynamodb": "table", "sqs": "queue", "s3": "objects", "ssm": "keys"}
# Calls the runtime makes while opening the store with create=1 (the test's moto
# account has no tables yet); the deployed stack creates them instead.
_SETUP_ONLY = {"CreateTable", "CreateQueue", "CreateBucket", "DescribeTable", "UpdateTimeToLive"}
_ITEM_ACTIONS = {
    "Put": "PutItem",
    "Update": "UpdateItem",
    "Delete": "DeleteItem",
    "ConditionCheck": "ConditionCheckItem",
    "PutRequest": "PutItem",
    "DeleteRequest": "DeleteItem",
}
_S3_ACTIONS = {
    "PutObject": "s3:PutObject",
    "GetObject": "s3:GetObject",
    "HeadObject": "s3:GetObject",
    "DeleteObject": "s3:DeleteObject",
    "DeleteObjects": "s3:DeleteObject",
    "ListObjectsV2": "s3:ListBucket",
}


def iam_actions(service: str, operation: str, params: dict[str, Any]) -> set[str]:
    """What AWS authorizes for one API call."""
    if service == "dynamodb" and operation == "TransactWriteItems":
        return {f"dynamodb:{_ITEM_ACTIONS[k]}" for item in params["TransactItems"] for k in item}
    if service == "dynamodb" and operation == "TransactGetItems":
        return {"dynamodb:GetItem"}
    if service == "dynamodb" and operation == "BatchWriteItem":
        return {
            f"dynamodb:{_ITEM_ACTIONS[k]}"
            for requests in params["RequestItems"].values()
            for request in requests
            for k in request
        }
    if service == "s3":
        return {_S3_ACTIONS.get(operation, f"s3:{operation}")}
    if service == "sqs" and operation.endswith("Batch"):  # authorized as the single action
        return {f"sqs:{operation.removesuffix('Batch')}"}
    return {f"{service}:{operation}"}


class Recorder:
    """botocore calls, by the function (role) that is running."""

    def __init__(self) -> None:
        self.role: str | None = None
        self.calls: dict[str, set[tuple[str, str]]] = {}  # role -> {(service, action)}

    @contextmanager
    def acting_as(self, role: str) -> Iterator[None]:
        self.role = role
        try:
            yield
        finally:
            self.role = None

    def record(self, client: Any, operation: str, params: dict[str, Any]) -> None:
        if self.role is None or operation in _SETUP_ONLY:
            return
        service = client.meta.service_model.service_name
        for action in iam_actions(service, operation, params):
            self.calls.setdefault(self.role, set()).add((service, action))


@pytest.fixture
def recorder(monkeypatch: pytest.MonkeyPatch) -> Recorder:
    recorder = Recorder()
    real = botocore.client.BaseClient._make_api_call  # type: ignore[attr-defined]  # not in the stubs

    def recording(self: Any, operation: str, params: dict[str, Any]) -> Any:
        recorder.record(self, operation, params)
        return real(self, operation, params)

    monkeypatch.setattr(botocore.client.BaseClient, "_make_api_call", recording)
    return recorder


@pytest.fixture
def rt(tmp_path: Path) -> Iterator[Runtime]:
    settings = settings_for(
        tmp_path,
        # lost_after=0: a job still waiting at the schedule counts as overdue there, so
        # the release asks the queue's depth (the path of a lost message).
        store_url=f"dynamodb://jobs?queue={QUEUE}&bucket=jobs-bucket&create=1&lost_after=0",
        extra={
            "SPOOL_SQS_VISIBILITY_TIMEOUT": "30",
            "SPOOL_WEBHOOKS": json.dumps({TENANT_A: {"secrets": [SECRET]}}),
            "SPOOL_WEBHOOK_ALLOW_PRIVATE": "true",
            "SPOOL_WEBHOOK_PORTS": "9",  # the discard port: nothing listens there
            "SPOOL_LIMITS": json.dumps({"type:sleep": {"concurrency": 2, "rate": "100/s"}}),
        },
    )
    with mock_aws(), installed(settings) as runtime:
        yield runtime


def _role(function: str) -> str:
    return FUNCTIONS[function][2]


def walk_every_function(rt: Runtime, api: Api, recorder: Recorder) -> None:
    """Each function's work, recorded by the role that does it: the API's routes, the
    SQS worker with retries, dead letters, webhooks and offloaded payloads, the
    schedule with its webhook deliveries (tests/test_attack_s62D_unused_grants.py
    walks it too)."""
    big = {"blob": "x" * 150_000}  # over DynamoDB's item size: offloaded to S3
    hook = "http://127.0.0.1:9/hook"  # nothing listens: the delivery fails and is retried
    with recorder.acting_as(_role("api_handler")):
        ids = [
            api.enqueue({"type": "echo", "payload": {"n": 1}}),
            api.enqueue({"type": "echo", "payload": big}),
            api.enqueue({"type": "echo", "payload": {"n": 2}, "callback_url": hook}),
            api.enqueue({"type": "fail", "payload": {"always": True}, "max_attempts": 1}),
            api.enqueue({"type": "sleep", "payload": {"seconds": 0}}),
            api.enqueue({"type": "echo", "payload": {"n": 3}, "idempotency_key": "k-1"}),
        ]
        batch = {"jobs": [{"type": "echo", "payload": {"i": i}} for i in range(3)]}
        assert api.post("/enqueue", batch).status == 201
        assert api.post("/enqueue", {"type": "echo", "idempotency_key": "k-1"}).status in (200, 409)
        later = api.enqueue({"type": "echo", "delay": 3600})
        assert api.post(f"/jobs/{later}/cancel").status == 200
    with recorder.acting_as(_role("run_jobs")):
        for _ in range(3):
            poller(rt).poll_once()
    with recorder.acting_as(_role("api_handler")):
        for job_id in ids:
            assert api.get(f"/status/{job_id}?attempts=true").status == 200
            assert api.get(f"/ui/api/jobs/{job_id}").status == 200
        assert api.get("/jobs?limit=50").status == 200
        assert api.get("/dlq").status == 200
        assert api.get("/ui/api/overview").status == 200
        dead = ids[3]
        assert api.get(f"/status/{dead}").json["state"] == "dead"
        assert api.post(f"/dlq/{dead}/redrive").status == 200
        assert api.post("/dlq/redrive").status == 200
        assert api.get("/metrics", key=OPERATOR_KEY).status == 200
        assert api.get("/health").status == 200
    with recorder.acting_as(_role("run_jobs")):
        poller(rt).poll_once()  # the redriven job dies again: its outbox and counters
        events.handle_sqs({"Records": []}, context("run_jobs"))
    with recorder.acting_as(_role("api_handler")):
        assert api.post("/ui/api/dead/purge", {"ids": [dead]}).status == 200
        api.enqueue({"type": "echo", "payload": {"waits": "for the schedule"}})
    with recorder.acting_as(_role("drain_due")):
        handler = spool_app.app.handler_map["drain_due"]
        handler(scheduled_event(spool_app.app), context("drain_due", 20_000))


def test_each_function_calls_only_what_its_role_allows(
    rt: Runtime, api: Api, recorder: Recorder
) -> None:
    walk_every_function(rt, api, recorder)
    assert set(recorder.calls) == {"api", "worker", "scheduler"}
    missing = {
        role: sorted(
            action
            for service, action in calls
            if action.split(":", 1)[1] not in _allowed(role, service)
        )
        for role, calls in recorder.calls.items()
    }
    assert missing == {"api": [], "worker": [], "scheduler": []}
    # ...and least privilege the other way: a table action a role is granted is one
    # this walk through its function's work calls, or one of the calls below, which
    # are made on paths it does not take (each named). dynamodb:Scan was granted to
    # the worker and the scheduler, which never scan (only the API's /metrics and
    # the all-tenant overview do: DynamoStore.counts).
    unused = {
        role: sorted(
            action.split(":", 1)[1]
            for action in ACTIONS[role]["table"]
            if ("dynamodb", action) not in recorder.calls[role]
        )
        for role in ("api", "worker", "scheduler")
    }
    for role, actions in unused.items():
        assert set(actions) <= set(UNWALKED_TABLE_ACTIONS[role]), (role, actions)


# Table actions a role is granted for paths the walk above does not take.
UNWALKED_TABLE_ACTIONS: dict[str, dict[str, str]] = {
    "api": {},
    "worker": {
        "DeleteItem": "a finish dropping old deliveries (the test below)",
        "GetItem": "a dropped message's job looked up (events._log_dropped)",
    },
    "scheduler": {
        "BatchGetItem": "a reap's read of a job's deliveries past SPOOL_WEBHOOK_HISTORY",
        "DeleteItem": "that reap dropping them; a periodic tick's add rolled back",
        "PutItem": "a periodic tick's add (SPOOL_SCHEDULES); a reap's webhook delivery",
    },
}


def _allowed(role: str, service: str) -> set[str]:
    granted = (
        KEY_ACTIONS
        if service == "ssm" and role == "api"
        else ACTIONS[role].get(_RESOURCE_KIND[service], [])
    )
    if service == "s3":
        granted = [*granted, *BUCKET_ACTIONS]
    return {a.split(":", 1)[1] for a in granted}


def test_a_put_inside_a_transaction_needs_put_item_and_a_batch_its_single_action() -> None:
    params: dict[str, Any] = {
        "TransactItems": [{"Update": {}}, {"Put": {}}, {"ConditionCheck": {}}]
    }
    assert iam_actions("dynamodb", "TransactWriteItems", params) == {
        "dynamodb:UpdateItem",
        "dynamodb:PutItem",
        "dynamodb:ConditionCheckItem",
    }
    assert iam_actions("sqs", "DeleteMessageBatch", {}) == {"sqs:DeleteMessage"}


def test_a_worker_s_finish_that_drops_old_deliveries_is_allowed(
    rt: Runtime, api: Api, recorder: Recorder
) -> None:
    """A job with a callback_url keeps its newest SPOOL_WEBHOOK_HISTORY finished
    deliveries: the finish that adds one past them deletes the oldest in its own
    transaction (a Delete inside TransactWriteItems: dynamodb:DeleteItem). The worker
    writes that finish, and its role had no DeleteItem: on AWS the 26th death of a
    redriven job was refused on every try, and the job never finished."""
    store = rt.store
    assert isinstance(store, DynamoStore)
    store.webhook_history = 1  # keep one: the third death drops the first delivery
    hook = "http://127.0.0.1:9/hook"
    job_id = api.enqueue(
        {"type": "fail", "payload": {"always": True}, "max_attempts": 1, "callback_url": hook}
    )
    for _ in range(3):
        with recorder.acting_as(_role("run_jobs")):
            poller(rt).poll_once()
        assert api.get(f"/status/{job_id}").json["state"] == "dead"
        for delivery in store.claim_webhooks(10, 30):
            assert store.finish_webhook(delivery.id, token(delivery), "delivered")
        assert api.post(f"/dlq/{job_id}/redrive").status == 200
    assert len(store.webhooks(job_id)) == 2  # the first was dropped by the third death
    worker = recorder.calls["worker"]
    assert ("dynamodb", "dynamodb:DeleteItem") in worker
    assert sorted(a for s, a in worker if a.split(":", 1)[1] not in _allowed("worker", s)) == []


WEBHOOKS_NAME = "/spool/test/webhooks"


@pytest.fixture
def hooks_in_ssm(tmp_path: Path) -> Iterator[Runtime]:
    """The webhook settings in an SSM parameter (SPOOL_WEBHOOKS_PARAMETER), not the
    environment; the parameter cache starts empty."""
    settings = settings_for(
        tmp_path,
        store_url=f"dynamodb://jobs?queue={QUEUE}&bucket=jobs-bucket&create=1",
        extra={
            "SPOOL_SQS_VISIBILITY_TIMEOUT": "30",
            "SPOOL_WEBHOOKS_PARAMETER": WEBHOOKS_NAME,
            "SPOOL_WEBHOOK_ALLOW_PRIVATE": "true",
            "SPOOL_WEBHOOK_PORTS": "9",  # the discard port: nothing listens there
        },
    )
    with mock_aws():
        value = json.dumps({TENANT_A: {"secrets": [SECRET]}})
        boto3.client("ssm").put_parameter(Name=WEBHOOKS_NAME, Value=value, Type="SecureString")
        secret_parameters.reset()
        try:
            with installed(settings) as runtime:
                yield runtime
        finally:
            secret_parameters.reset()


def test_the_webhook_parameter_is_read_by_the_roles_granted_it_alone(
    hooks_in_ssm: Runtime, recorder: Recorder
) -> None:
    """The API reads it at enqueue (does this tenant have a webhook?), the scheduled
    function to sign the delivery; the SQS worker runs the job and writes its delivery
    without it. Each function is a process of its own on AWS: the cache starts empty."""
    rt = hooks_in_ssm
    with Client(spool_app.app, stage_name="local") as client:
        api = Api(client)
        with recorder.acting_as(_role("api_handler")):
            job_id = api.enqueue({"type": "echo", "callback_url": "http://127.0.0.1:9/hook"})
    secret_parameters.reset()
    with recorder.acting_as(_role("run_jobs")):
        poller(rt).poll_once()
    secret_parameters.reset()
    with recorder.acting_as(_role("drain_due")):
        handler = spool_app.app.handler_map["drain_due"]
        handler(scheduled_event(spool_app.app), context("drain_due", 20_000))
    [delivery] = rt.store.webhooks(job_id)
    assert delivery.attempts == 1  # signed and tried (nothing listens on port 9)
    reads = {
        role: sorted(a for s, a in calls if s == "ssm") for role, calls in recorder.calls.items()
    }
    assert reads == {role: ["ssm:GetParameter"] if role in WEBHOOK_ROLES else [] for role in reads}
    assert set(reads) == {"api", "worker", "scheduler"}

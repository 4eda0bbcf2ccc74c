"""The webhook signing secrets out of the Lambda environment: SPOOL_WEBHOOKS_PARAMETER
names an SSM SecureString holding what SPOOL_WEBHOOKS would (chalicelib/webhooks/source.py).

Anyone who may read a function's configuration read every tenant's signing secrets in
SPOOL_WEBHOOKS. moto plays SSM in process; the receiver is tests/webhook_receiver.py's
on loopback. Each test signs with a secret of its own: the log redactor is the
process's, and a secret masked by an earlier test would hide a leak here.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from chalice.test import Client
from moto import mock_aws

import app as spool_app
from chalicelib import logs, secret_parameters
from chalicelib.clock import FakeClock
from chalicelib.config import ConfigError, Settings
from chalicelib.log_redact import redactor
from chalicelib.models import Completion, JobState
from chalicelib.storage.memory import MemoryStore
from chalicelib.webhooks import config, runner, signing
from chalicelib.webhooks.deliver import Deliverer
from infra import generate
from spool_client.webhooks import verify
from tests.apikit import KEY_A, KEY_B, Api, installed, settings_for
from tests.factories import new_job, token
from tests.ssm_clients import Counting, Denied
from tests.webhook_receiver import Receiver

ROOT = Path(__file__).resolve().parent.parent
NAME = "/spool/test/webhooks"


def hooks_of(secret: str, url: str | None = None) -> str:
    entry: dict[str, Any] = {"secrets": [secret]}
    if url is not None:
        entry["url"] = url
    return json.dumps({"tenant-a": entry})  # tenant-b has none


@pytest.fixture
def ssm() -> Iterator[tuple[Any, Counting]]:
    """moto's SSM, the process's parameter cache reading through it."""
    with mock_aws():
        client = boto3.client("ssm", region_name="us-east-1")
        counting = Counting(client)
        secret_parameters.reset(lambda: counting)
        yield client, counting
    secret_parameters.reset()


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    buf = io.StringIO()
    logs.configure(Settings(), stream=buf, force=True)
    yield buf
    logs.reset()


def put(client: Any, value: str) -> None:
    client.put_parameter(Name=NAME, Value=value, Type="SecureString", Overwrite=True)


def from_parameter(**extra: str) -> dict[str, str]:
    return {"SPOOL_WEBHOOKS_PARAMETER": NAME, "SPOOL_WEBHOOK_ALLOW_PRIVATE": "true", **extra}


# -- the API: which tenant may ask for a webhook -------------------------------------


def test_the_api_takes_the_tenants_from_the_parameter(
    tmp_path: Path, ssm: tuple[Any, Counting], receiver: Receiver, captured: io.StringIO
) -> None:
    client, counting = ssm
    secret = signing.new_secret()
    put(client, hooks_of(secret))
    settings = settings_for(tmp_path, extra=from_parameter())
    assert "SPOOL_WEBHOOKS" not in settings.extra
    with installed(settings), Client(spool_app.app) as chalice:
        api = Api(chalice)
        job = {"type": "echo", "callback_url": receiver.url}
        refused = api.post("/enqueue", job, key=KEY_B)
        assert refused.status == 422, refused.body
        assert refused.json["error"]["details"] == {
            "field": "callback_url",
            "loc": ["callback_url"],
        }
        accepted = api.post("/enqueue", job, key=KEY_A)
        assert accepted.status == 201, accepted.body
        again = api.post("/enqueue", job, key=KEY_A)
        assert again.status == 201
        assert api.get("/jobs", key=KEY_B).json["jobs"] == []
    assert counting.reads == 1  # kept for its TTL, not read per enqueue
    logging.getLogger("spool.test").warning("a line that quotes %s", secret)
    assert secret not in captured.getvalue()
    assert secret not in redactor.text(f"signed with {secret}")


def test_a_parameter_not_read_until_an_enqueue_needs_it(
    tmp_path: Path, ssm: tuple[Any, Counting]
) -> None:
    """The API's first request (here /health) and a job without a callback URL for a
    tenant with no default endpoint need the webhook settings not at all... but the
    tenant's default endpoint is in them, so an enqueue reads them."""
    client, counting = ssm
    put(client, hooks_of(signing.new_secret()))
    with installed(settings_for(tmp_path, extra=from_parameter())), Client(spool_app.app) as c:
        api = Api(c)
        assert api.get("/health").status == 200
        assert counting.reads == 0
        assert api.post("/enqueue", {"type": "echo"}, key=KEY_A).status == 201
        assert counting.reads == 1


def test_an_unreadable_parameter_is_a_503_naming_it_and_stores_nothing(tmp_path: Path) -> None:
    secret_parameters.reset(Denied)
    try:
        with (
            installed(settings_for(tmp_path, extra=from_parameter())),
            Client(spool_app.app) as chalice,
        ):
            api = Api(chalice)
            for job in (
                {"type": "echo", "callback_url": "http://127.0.0.1:9000/h"},
                {"type": "echo"},
            ):
                reply = api.post("/enqueue", job, key=KEY_A)
                assert reply.status == 503, reply.body
                assert reply.header("Retry-After")
                assert NAME in reply.json["error"]["message"]
            batch = {"jobs": [{"type": "echo"}, {"type": "echo", "callback_url": "http://x.test/"}]}
            assert api.post("/enqueue", batch, key=KEY_A).status == 503
            assert api.get("/jobs", key=KEY_A).json["jobs"] == []  # not half a batch
            assert api.get("/health").status == 200  # the rest of the API stands
    finally:
        secret_parameters.reset()


def test_a_malformed_parameter_is_refused_naming_the_setting_never_a_secret(
    tmp_path: Path, ssm: tuple[Any, Counting], captured: io.StringIO
) -> None:
    client, _ = ssm
    secret = signing.new_secret()
    bad = json.dumps({"tenant-a": {"secrets": [secret], "urll": "https://x.test/"}})
    put(client, bad)
    settings = Settings(extra=from_parameter())
    with pytest.raises(ConfigError) as raised:
        config.from_settings(settings)
    message = str(raised.value)
    assert message.startswith("SPOOL_WEBHOOKS_PARAMETER's value['tenant-a']: unknown field")
    assert NAME in message and secret not in message
    put(client, "{not json")
    secret_parameters.reset(lambda: client)
    with pytest.raises(ConfigError, match=r"^SPOOL_WEBHOOKS_PARAMETER's value must be a JSON"):
        config.from_settings(settings)
    # The API: 503 misconfigured, nothing stored, the log names the setting.
    put(client, bad)
    secret_parameters.reset(lambda: client)
    with installed(settings_for(tmp_path, extra=from_parameter())), Client(spool_app.app) as c:
        api = Api(c)
        reply = api.post("/enqueue", {"type": "echo"}, key=KEY_A)
        assert reply.status == 503 and reply.error_code == "misconfigured", reply.body
        assert secret not in reply.body.decode()
        assert api.get("/jobs", key=KEY_A).json["jobs"] == []
    assert "SPOOL_WEBHOOKS_PARAMETER" in captured.getvalue()
    assert secret not in captured.getvalue()


def test_the_plain_setting_wins_and_the_parameter_is_not_read(tmp_path: Path) -> None:
    class Refusing:
        def get_parameter(self, *, Name: str, WithDecryption: bool) -> Any:
            raise AssertionError("SPOOL_WEBHOOKS is set: the parameter must not be read")

    secret_parameters.reset(Refusing)
    try:
        extra = from_parameter(SPOOL_WEBHOOKS=hooks_of(signing.new_secret()))
        hooks = config.from_settings(Settings(extra=extra))
        assert hooks.tenant("tenant-a") is not None
        with installed(settings_for(tmp_path, extra=extra)), Client(spool_app.app) as c:
            job = {"type": "echo", "callback_url": "http://127.0.0.1:9000/h"}
            assert Api(c).post("/enqueue", job, key=KEY_A).status == 201
    finally:
        secret_parameters.reset()


def test_a_malformed_parameter_name_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="SPOOL_WEBHOOKS_PARAMETER must be an SSM parameter"):
        config.validate(Settings(extra={"SPOOL_WEBHOOKS_PARAMETER": "not a name!"}))


# -- the worker: delivery signed with the parameter's secret --------------------------


def finished_job(store: MemoryStore, url: str) -> str:
    clock = store.clock
    assert isinstance(clock, FakeClock)
    job = store.add([new_job(clock, tenant="tenant-a", callback_url=url)])[0].job
    [running] = store.claim(1, 30)
    store.finish([Completion(job.id, token(running), JobState.SUCCEEDED, result={"ok": 1})])
    return job.id


def test_the_worker_signs_with_the_parameters_secret(
    ssm: tuple[Any, Counting], receiver: Receiver, captured: io.StringIO
) -> None:
    client, _ = ssm
    secret = signing.new_secret()
    put(client, hooks_of(secret))
    settings = Settings(extra=from_parameter())
    assert runner.enabled(settings)
    store = MemoryStore(FakeClock())
    job_id = finished_job(store, receiver.url)
    deliverer = Deliverer(store, settings)
    try:
        assert deliverer.drain() == 1
    finally:
        deliverer.close()
    [got] = receiver.requests
    [d] = store.webhooks(job_id)
    assert d.state == "delivered"
    event = verify(got.body, got.headers, secret, now=int(got.headers["webhook-timestamp"]))
    assert event["data"]["id"] == job_id
    logging.getLogger("spool.webhooks").warning("quoting the secret: %s", secret)
    assert secret not in captured.getvalue()


def test_the_tenants_default_endpoint_comes_from_the_parameter(
    ssm: tuple[Any, Counting], receiver: Receiver
) -> None:
    client, _ = ssm
    put(client, hooks_of(signing.new_secret(), url=receiver.url))
    from chalicelib.webhooks.enqueue import callback_for

    assert callback_for(None, "tenant-a", Settings(extra=from_parameter())) == receiver.url
    assert callback_for(None, "tenant-b", Settings(extra=from_parameter())) is None


def test_an_unreadable_parameter_loses_no_delivery(
    ssm: tuple[Any, Counting], receiver: Receiver
) -> None:
    """While SSM refuses, nothing is claimed (a claim spends an attempt): the delivery
    waits in the outbox, and is made once the parameter can be read again."""
    client, _ = ssm
    secret = signing.new_secret()
    put(client, hooks_of(secret))
    settings = Settings(extra=from_parameter(SPOOL_WEBHOOK_MAX_ATTEMPTS="1"))
    store = MemoryStore(FakeClock())
    job_id = finished_job(store, receiver.url)
    secret_parameters.reset(Denied)
    deliverer = Deliverer(store, settings)  # builds: the parameter is read on first need
    try:
        for _ in range(3):
            assert deliverer.drain() == 0
        [d] = store.webhooks(job_id)
        assert d.state == "pending" and d.attempts == 0
        assert receiver.requests == []
        secret_parameters.reset(lambda: client)
        assert deliverer.drain() == 1
    finally:
        deliverer.close()
    [d] = store.webhooks(job_id)
    assert d.state == "delivered" and d.attempts == 1
    [got] = receiver.requests
    verify(got.body, got.headers, secret, now=int(got.headers["webhook-timestamp"]))


def test_a_malformed_parameter_pauses_delivery_and_says_why_once(
    ssm: tuple[Any, Counting], receiver: Receiver, captured: io.StringIO
) -> None:
    """A value the API would refuse is refused by the worker too, without spending an
    attempt: the delivery waits for the operator's fix, which lands within the TTL."""
    client, _ = ssm
    secret = signing.new_secret()
    put(client, json.dumps({"tenant-a": {"secrets": [secret, secret, secret]}}))
    store = MemoryStore(FakeClock())
    job_id = finished_job(store, receiver.url)
    deliverer = Deliverer(store, Settings(extra=from_parameter()))
    try:
        assert deliverer.drain() == 0 and deliverer.drain() == 0
        [d] = store.webhooks(job_id)
        assert d.state == "pending" and d.attempts == 0
        put(client, hooks_of(secret))
        secret_parameters.reset(lambda: client)  # as the TTL running out would
        assert deliverer.drain() == 1
    finally:
        deliverer.close()
    assert [d.state for d in store.webhooks(job_id)] == ["delivered"]
    said = captured.getvalue()
    assert said.count("webhook delivery paused") == 1
    assert "SPOOL_WEBHOOKS_PARAMETER's value['tenant-a']: give 1 or 2 secrets" in said
    assert NAME in said and "webhook delivery resumed" in said
    assert secret not in said


# -- the stack: the parameter's name in the functions' environment, a grant to read it ---


def _template() -> dict[str, Any]:
    document: dict[str, Any] = json.loads((ROOT / "infra" / "resources.json").read_text())
    return document


def test_the_stack_names_the_parameter_and_only_its_readers_may_read_it() -> None:
    template = _template()
    resources = template["Resources"]
    assert template["Parameters"]["WebhooksParameter"]["Default"] == ""
    readers = {}
    for function, role_id, role in generate.FUNCTIONS.values():
        env = resources[function]["Properties"]["Environment"]["Variables"]
        assert "SPOOL_WEBHOOKS" not in env
        statements = resources[role_id]["Properties"]["Policies"][0]["PolicyDocument"]["Statement"]
        readers[role] = "WebhooksParameter" in json.dumps(statements)
        if role in generate.WEBHOOK_ROLES:
            given = env["SPOOL_WEBHOOKS_PARAMETER"]["Fn::If"]
            assert given == ["HasWebhooksParameter", {"Ref": "WebhooksParameter"},
                             {"Ref": "AWS::NoValue"}]  # fmt: skip
        else:
            assert "SPOOL_WEBHOOKS_PARAMETER" not in env
    # The API checks a tenant's webhook at enqueue; the scheduled function delivers
    # (and enqueues periodic jobs); the SQS worker does neither.
    assert readers == {"api": True, "worker": False, "scheduler": True}


def test_each_chalice_stage_policy_grants_its_webhook_parameter_to_its_readers() -> None:
    for stage in generate.STAGES:
        for role in ("api", "scheduler", "worker"):
            policy = json.loads((ROOT / ".chalice" / f"policy-{stage}-{role}.json").read_text())
            text = json.dumps(policy)
            named = f"parameter/spool/{stage}/webhooks" in text
            assert named == (role in generate.WEBHOOK_ROLES), (stage, role)


# -- the periodic scheduler: its enqueues read the parameter too ----------------------


@pytest.mark.parametrize("trouble", ["malformed", "unreadable"])
def test_a_tick_whose_enqueue_cannot_read_the_webhook_settings_is_retried_without_a_traceback(
    ssm: tuple[Any, Counting], caplog: pytest.LogCaptureFixture, trouble: str
) -> None:
    """A schedule's enqueue reads the webhook settings (a tenant's default endpoint):
    a malformed or unreadable parameter is the operator's to fix and passes. The tick
    is retried (lost, a nightly job skipped a night) and said in a line per run of
    failures, not a traceback per try; once fixed, the same tick fires."""
    from chalicelib.handlers import Registry
    from chalicelib.periodic import Schedule, Scheduler
    from chalicelib.service import Service

    client, _ = ssm
    if trouble == "malformed":
        put(client, '{"tenant-a": {"secrets": "not a list"}}')
    clock = FakeClock()
    store = MemoryStore(clock)
    handlers = Registry()
    handlers.handler("report")(lambda payload: None)
    service = Service(store, handlers, Settings(extra=from_parameter()))
    scheduler = Scheduler(service, handlers, [Schedule(name="nightly", type="report", every=60)])
    with caplog.at_level(logging.INFO):
        [failed] = scheduler.fire_due()
        [again] = scheduler.fire_due()
    assert failed.outcome == again.outcome == "error"
    assert failed.retry and again.retry  # tried again soon, not at the next tick
    assert not [r for r in caplog.records if r.exc_info], "a traceback for a passing failure"
    put(client, hooks_of(signing.new_secret()))
    secret_parameters.reset(lambda: client)  # the value fixed (no 5 minutes' wait here)
    [fired] = scheduler.fire_due()
    assert (fired.outcome, fired.tick) == ("enqueued", failed.tick)

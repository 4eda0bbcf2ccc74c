"""What a handler's payload check says at enqueue reaches the tenant masked.

A newcomer's admit hook (or payload model) that raised with a setting in its message
(`RuntimeError("partner refused token " + os.environ["PARTNER_TOKEN"])`) had that
value put into the 503 `misconfigured` answer as it was: the token named in
SPOOL_SECRET_VARIABLES, the SMTP password, even a `key=tenant` entry of
SPOOL_API_KEYS, to whichever tenant sent the job. A refusal (ValueError, 422) and a
model validator's message did the same. The worker masks a handler's exception by
value before the tenant reads it (attempt_record._beside); the enqueue answer now
does too, leaving alone a value the tenant sent itself, as the worker does.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Any

import pytest
from pydantic import BaseModel, field_validator

from chalicelib import logs
from chalicelib import runtime as runtime_module
from chalicelib.config import Settings
from chalicelib.errors import Misconfigured, ValidationFailed
from chalicelib.handlers import Registry
from chalicelib.runtime import Runtime
from chalicelib.service import Service
from tests.apikit import Api

TOKEN = "tok-partner-Secret-4711"
SMTP_PASSWORD = "smtp-Pa55word-s47c"


@pytest.fixture
def secrets_known(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The process's logging set up with a handler secret and one of Spool's own, as
    `spool serve` sets it up before the first request."""
    env = {
        "SPOOL_SECRET_VARIABLES": "PARTNER_TOKEN",
        "PARTNER_TOKEN": TOKEN,
        "SPOOL_SMTP_PASSWORD": SMTP_PASSWORD,
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    logs.configure(Settings.from_env(env), stream=io.StringIO(), force=True)
    yield
    logs.reset()


class Account(BaseModel):
    account: str = ""

    @field_validator("account")
    @classmethod
    def _known(cls, account: str) -> str:
        if account == "smtp":
            raise ValueError(f"cannot log in with {SMTP_PASSWORD}")
        return account


def _registry() -> Registry:
    reg = Registry()

    def admit(payload: Account, tenant: str) -> None:
        if payload.account == "crash":
            raise RuntimeError(f"partner refused token {TOKEN}")
        if payload.account == "refuse":
            raise ValueError(f"partner refused token {TOKEN}")
        if payload.account == TOKEN:  # the tenant's own words, sent back to it
            raise ValueError(f"no account {payload.account}")

    reg.handler("partner_call", payload=Account, admit=admit)(lambda payload: None)
    return reg


def _said(exc: ValidationFailed | Misconfigured) -> str:
    details: Any = exc.details
    return f"{exc} {details}"


@pytest.mark.usefixtures("secrets_known")
def test_an_admit_check_that_crashes_does_not_send_its_secret_back() -> None:
    with pytest.raises(Misconfigured) as refused:
        _registry().get("partner_call").validate({"account": "crash"}, tenant="acme")
    assert TOKEN not in _said(refused.value)
    assert "(RuntimeError: partner refused token ***)" in str(refused.value)


@pytest.mark.usefixtures("secrets_known")
def test_an_admit_refusal_does_not_send_its_secret_back() -> None:
    with pytest.raises(ValidationFailed) as refused:
        _registry().get("partner_call").validate({"account": "refuse"}, tenant="acme")
    assert TOKEN not in _said(refused.value)
    assert "partner refused token ***" in str(refused.value)


@pytest.mark.usefixtures("secrets_known")
def test_a_model_validator_s_message_does_not_send_a_spool_secret_back() -> None:
    with pytest.raises(ValidationFailed) as refused:
        _registry().get("partner_call").validate({"account": "smtp"}, tenant="acme")
    assert SMTP_PASSWORD not in _said(refused.value)
    assert "cannot log in with ***" in _said(refused.value)


@pytest.mark.usefixtures("secrets_known")
def test_what_the_tenant_sent_comes_back_as_sent() -> None:
    """A `***` where the tenant's own guess stood would tell it the guess was right."""
    with pytest.raises(ValidationFailed) as refused:
        _registry().get("partner_call").validate({"account": TOKEN}, tenant="acme")
    assert f"no account {TOKEN}" in str(refused.value)


@pytest.fixture
def partner_api(rt: Runtime, secrets_known: None) -> Iterator[Api]:
    """app.py over chalice's test client, offering the partner_call handler only: the
    process-wide registry is left alone (others' tests list its types)."""
    from chalice.test import Client

    import app as spool_app

    reg = _registry()
    runtime_module.reset(Runtime(rt.settings, rt.store, reg, Service(rt.store, reg, rt.settings)))
    with Client(spool_app.app, stage_name="local") as client:
        yield Api(client)


@pytest.mark.parametrize(
    ("account", "status", "secret"),
    [("crash", 503, TOKEN), ("refuse", 422, TOKEN), ("smtp", 422, SMTP_PASSWORD)],
)
def test_the_http_answer_holds_no_secret(
    partner_api: Api, account: str, status: int, secret: str
) -> None:
    """POST /enqueue holds a typed payload to its model strictly before the service
    checks it: both readings of the handler's code answer masked."""
    reply = partner_api.post("/enqueue", {"type": "partner_call", "payload": {"account": account}})
    assert reply.status == status, reply.body
    assert secret.encode() not in reply.body
    assert b"***" in reply.body

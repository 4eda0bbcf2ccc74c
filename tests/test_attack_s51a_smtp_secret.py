"""The SMTP password out of the Lambda environment: SPOOL_SMTP_PASSWORD_PARAMETER names
an SSM SecureString the worker reads when it first logs in (chalicelib/secret_parameters.py).

Anyone who may read a function's configuration reads its environment; the API keys
already came from SSM, the SMTP password sat there in plain text. moto plays SSM in
process; the SMTP server is aiosmtpd on loopback (tests/test_email.py's).
"""

from __future__ import annotations

import json
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from moto import mock_aws

from chalicelib import secret_parameters
from chalicelib.builtin import email as mail
from chalicelib.errors import PermanentError
from chalicelib.log_redact import redactor
from infra import generate
from tests.ssm_clients import Counting
from tests.test_email import (  # noqa: F401 (fixtures)
    Mailbox,
    _authenticator,
    mailbox,
    point_at,
    send,
    smtp_server,
    tls_files,
)

ROOT = Path(__file__).resolve().parent.parent
NAME = "/spool/test/smtp-password"


@pytest.fixture
def ssm() -> Iterator[Counting]:
    with mock_aws():
        client = boto3.client("ssm", region_name="us-east-1")
        client.put_parameter(Name=NAME, Value="s3cret", Type="SecureString")
        counting = Counting(client)
        secret_parameters.reset(lambda: counting)
        yield counting
    secret_parameters.reset()


def _tls_login(
    monkeypatch: pytest.MonkeyPatch, tls: tuple[ssl.SSLContext, str], port: int, **extra: str
) -> None:
    point_at(
        monkeypatch,
        port,
        SPOOL_SMTP_STARTTLS="true",
        SPOOL_SMTP_USERNAME="spool",
        SPOOL_SMTP_CA_FILE=tls[1],
        **extra,
    )


def test_the_password_comes_from_its_parameter_read_once(
    mailbox: Mailbox,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
    tls_files: tuple[ssl.SSLContext, str],  # noqa: F811
    ssm: Counting,
) -> None:
    monkeypatch.delenv("SPOOL_SMTP_PASSWORD", raising=False)
    with smtp_server(
        mailbox, tls_context=tls_files[0], require_starttls=True, auth_required=True,
        authenticator=_authenticator,
    ) as controller:  # fmt: skip
        _tls_login(monkeypatch, tls_files, controller.port, SPOOL_SMTP_PASSWORD_PARAMETER=NAME)
        send()
        send()
        assert len(mailbox.received) == 2
        assert ssm.reads == 1  # kept for its TTL, not read per message
        assert "s3cret" not in redactor.text("login with s3cret failed")
        # The plain setting, when set, still wins (local runs): the parameter is not read.
        monkeypatch.setenv("SPOOL_SMTP_PASSWORD", "wrong")
        with pytest.raises(PermanentError, match="535"):
            send()
        assert ssm.reads == 1


def test_a_parameter_that_cannot_be_read_is_retried_and_names_no_value(
    mailbox: Mailbox,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
    tls_files: tuple[ssl.SSLContext, str],  # noqa: F811
) -> None:
    class Denied:
        def get_parameter(self, *, Name: str, WithDecryption: bool) -> Any:
            raise ClientError({"Error": {"Code": "AccessDeniedException"}}, "GetParameter")

    secret_parameters.reset(Denied)
    monkeypatch.delenv("SPOOL_SMTP_PASSWORD", raising=False)
    try:
        with smtp_server(mailbox, tls_context=tls_files[0], require_starttls=True) as controller:
            _tls_login(monkeypatch, tls_files, controller.port, SPOOL_SMTP_PASSWORD_PARAMETER=NAME)
            with pytest.raises(secret_parameters.SecretUnavailable) as caught:
                send()
        # Not a PermanentError: a passing denial or outage is retried with backoff.
        assert not isinstance(caught.value, PermanentError)
        assert NAME in str(caught.value) and "AccessDeniedException" in str(caught.value)
        assert mailbox.received == []
    finally:
        secret_parameters.reset()


def test_enqueue_never_reads_the_parameter(monkeypatch: pytest.MonkeyPatch) -> None:
    """The API checks a send_email payload at enqueue (admit) with the worker's
    settings: it must not need the password, nor a grant to read it."""

    class Refusing:
        def get_parameter(self, *, Name: str, WithDecryption: bool) -> Any:
            raise AssertionError("the API read the SMTP password")

    secret_parameters.reset(Refusing)
    try:
        point_at(monkeypatch, 25, SPOOL_SMTP_USERNAME="spool", SPOOL_SMTP_STARTTLS="true",
                 SPOOL_SMTP_PASSWORD_PARAMETER=NAME)  # fmt: skip
        monkeypatch.delenv("SPOOL_SMTP_PASSWORD", raising=False)
        payload = mail.EmailPayload.model_validate(
            {"to": "a@example.org", "subject": "s", "text": "x"}
        )
        mail.admit(payload, "acme")
    finally:
        secret_parameters.reset()


def test_a_malformed_parameter_name_is_a_misconfiguration(monkeypatch: pytest.MonkeyPatch) -> None:
    point_at(monkeypatch, 25, SPOOL_SMTP_PASSWORD_PARAMETER="not a name!")
    monkeypatch.delenv("SPOOL_SMTP_PASSWORD", raising=False)
    with pytest.raises(PermanentError, match="SPOOL_SMTP_PASSWORD_PARAMETER"):
        send()


# -- the stack: the parameter's name in the worker's environment, a grant to read it --------


def _template() -> dict[str, Any]:
    document: dict[str, Any] = json.loads((ROOT / "infra" / "resources.json").read_text())
    return document


def test_the_stack_hands_the_worker_the_parameter_and_only_the_worker_may_read_it() -> None:
    resources = _template()["Resources"]
    params = _template()["Parameters"]
    assert params["SmtpPasswordParameter"]["Default"] == ""
    env = resources["RunJobs"]["Properties"]["Environment"]["Variables"]
    assert "SPOOL_SMTP_PASSWORD" not in env
    given = env["SPOOL_SMTP_PASSWORD_PARAMETER"]["Fn::If"]
    assert given[0] == "HasSmtpPasswordParameter"
    assert given[1] == {"Ref": "SmtpPasswordParameter"}
    readers = {}
    for _, role_id, role in generate.FUNCTIONS.values():
        statements = resources[role_id]["Properties"]["Policies"][0]["PolicyDocument"]["Statement"]
        text = json.dumps(statements)
        readers[role] = "SmtpPasswordParameter" in text
    assert readers == {"api": False, "worker": True, "scheduler": False}


def test_no_chalice_stage_holds_a_plain_smtp_password() -> None:
    config = json.loads((ROOT / ".chalice" / "config.json").read_text())
    text = json.dumps(config)
    assert 'SPOOL_SMTP_PASSWORD"' not in text
    worker = json.loads((ROOT / ".chalice" / "policy-prod-worker.json").read_text())
    assert "parameter/spool/prod/smtp-password" in json.dumps(worker)
    api = json.loads((ROOT / ".chalice" / "policy-prod-api.json").read_text())
    assert "smtp-password" not in json.dumps(api)

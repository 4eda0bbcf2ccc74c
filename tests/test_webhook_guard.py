"""Callback URLs at enqueue: the SSRF guard's whole class of refusals is a 422 that
stores nothing, and a tenant without a secret cannot ask for webhooks."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from chalice.test import Client

import app as spool_app
from chalicelib.runtime import Runtime
from tests.apikit import KEY_A, KEY_B, Api, installed, settings_for

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
HOOKS = json.dumps({"tenant-a": {"secrets": [SECRET]}})  # tenant-b has none


@pytest.fixture
def rt(tmp_path) -> Iterator[Runtime]:
    settings = settings_for(tmp_path, extra={"SPOOL_WEBHOOKS": HOOKS})
    with installed(settings) as runtime:
        yield runtime


@pytest.fixture
def api(rt: Runtime) -> Iterator[Api]:
    with Client(spool_app.app) as client:
        yield Api(client)


def stored(api: Api, key: str = KEY_A) -> list[object]:
    return list(api.get("/jobs", key=key).json["jobs"])


REFUSED = [
    # loopback, private, CGNAT, link-local, this-host, multicast, reserved
    "http://127.0.0.1/hooks",
    "http://127.255.0.9:8080/",
    "http://[::1]/",
    "http://10.0.0.5/",
    "http://172.16.3.4/",
    "http://192.168.1.1/",
    "http://[fd12:3456::1]/",
    "http://100.64.0.1/",
    "http://169.254.10.10/",
    "http://[fe80::1]/",
    "http://0.0.0.0/",
    "http://224.0.0.1/",
    "http://240.0.0.1/",
    # cloud metadata, by address and by name
    "http://169.254.169.254/latest/meta-data/",
    "http://169.254.170.2/v2/credentials",
    "http://[fd00:ec2::254]/",
    "http://100.100.100.200/",
    "http://metadata.google.internal/computeMetadata/v1/",
    "http://instance-data/latest/",
    # addresses in disguise
    "http://[::ffff:127.0.0.1]/",
    "http://[::ffff:169.254.169.254]/",
    "http://2130706433/",
    "http://0x7f000001/",
    "http://0177.0.0.1/",
    "http://127.1/",
    "http://[64:ff9b::a9fe:a9fe]/",  # NAT64 of 169.254.169.254
    # names of this host
    "http://localhost/",
    "http://LOCALHOST:8000/x",
    "http://api.localhost/",
    # schemes other than http(s)
    "ftp://example.com/file",
    "file:///etc/passwd",
    "gopher://example.com/",
    "javascript:alert(1)",
    "data:text/plain,hi",
    # credentials and odd shapes
    "http://user:pass@example.com/",
    "http://example.com@127.0.0.1/",
    "http:///no-host",
    "http://exa mple.com/",
    "http://example.com\\@127.0.0.1/",
    "http://%6c%6fcalhost/",
    "not a url",
    "//example.com/path",
    "http://example.com:99999/",
    "https://" + "a" * 2100 + ".example.com/",
]


@pytest.mark.parametrize("url", REFUSED)
def test_a_callback_url_that_can_never_be_allowed_is_a_422(api: Api, url: str) -> None:
    reply = api.post("/enqueue", {"type": "echo", "callback_url": url})
    assert reply.status == 422, (url, reply.body)
    assert reply.error_code == "validation_error"
    assert "callback_url" in reply.body.decode()
    assert stored(api) == []  # nothing half-written


@pytest.mark.parametrize("value", ["", 42, ["https://example.com/"], {"url": "x"}, None])
def test_a_callback_url_of_the_wrong_type_is_a_422_or_absent(api: Api, value: object) -> None:
    reply = api.post("/enqueue", {"type": "echo", "callback_url": value})
    if value is None:  # JSON null: no callback, as if absent
        assert reply.status == 201
    else:
        assert reply.status == 422, reply.body
        assert stored(api) == []


def test_a_public_callback_url_is_accepted_without_dns(api: Api, rt: Runtime) -> None:
    """Names are resolved at delivery, not at enqueue: a name that does not resolve
    here is still accepted (the netguard would refuse any lookup traffic anyway)."""
    job_id = api.enqueue({"type": "echo", "callback_url": "https://hooks.example.com/spool"})
    assert rt.store.get(job_id) is not None


def test_one_bad_callback_in_a_batch_stores_none(api: Api) -> None:
    jobs = [
        {"type": "echo", "callback_url": "https://hooks.example.com/a"},
        {"type": "echo", "callback_url": "http://169.254.169.254/"},
    ]
    reply = api.post("/enqueue", {"jobs": jobs})
    assert reply.status == 422
    assert reply.json["error"]["details"][0]["index"] == 1
    assert stored(api) == []


def test_a_tenant_without_a_secret_cannot_ask_for_webhooks(api: Api) -> None:
    reply = api.post(
        "/enqueue", {"type": "echo", "callback_url": "https://hooks.example.com/"}, key=KEY_B
    )
    assert reply.status == 422
    assert "secret" in reply.json["error"]["message"]
    assert stored(api, KEY_B) == []


def test_status_lists_no_webhooks_for_a_job_without_one(api: Api) -> None:
    job_id = api.enqueue({"type": "echo"})
    reply = api.get(f"/status/{job_id}?webhooks=true")
    assert reply.status == 200 and reply.json["webhooks"] == []
    assert reply.header("X-Cache") == "miss"


def test_misconfigured_secrets_are_a_clear_error_without_the_secret(tmp_path) -> None:
    from chalicelib.config import ConfigError, Settings
    from chalicelib.webhooks import config

    leaked = "whsec_notbase64!!"
    bad = {
        f'{{"acme": {{"secrets": ["{leaked}"]}}}}': "secret 1",
        '{"acme": {"secrets": []}}': "give 1 or 2",
        '{"acme": {"secrets": ["a", "b", "c"]}}': "give 1 or 2",
        '{"acme": {"secret": "whsec_c2hvcnQ="}}': "24 to 64 bytes",
        '{"acme": {"secrets": ["plain-text"]}}': "whsec_",
        f'{{"acme": {{"url": 5, "secrets": ["{SECRET}"]}}}}': "url",
        '{"acme": {"extra": 1}}': "unknown field(s) 'extra'",
        '{"acme": [1]}': "must be an object",
        "[1, 2]": "JSON object",
        "{not json": "JSON object",
    }
    for raw, hint in bad.items():
        with pytest.raises(ConfigError) as raised:
            config.from_settings(Settings(extra={"SPOOL_WEBHOOKS": raw}))
        assert hint in str(raised.value), (raw, str(raised.value))
        assert leaked not in str(raised.value) and SECRET not in str(raised.value)
    with pytest.raises(ConfigError, match="SPOOL_WEBHOOK_ALLOWLIST"):
        config.from_settings(Settings(extra={"SPOOL_WEBHOOK_ALLOWLIST": "10.0.0.0/99"}))


def test_a_malformed_webhook_setting_answers_503_naming_no_secret(tmp_path) -> None:
    """Every enqueue would fail the same way: the API answers 503 (misconfigured) and
    the log names the setting, as for a malformed SPOOL_API_KEYS."""
    settings = settings_for(tmp_path, extra={"SPOOL_WEBHOOKS": '{"tenant-a": {"secrets": []}}'})
    with installed(settings), Client(spool_app.app) as client:
        reply = Api(client).post("/enqueue", {"type": "echo"})
    assert reply.status == 503 and reply.error_code == "misconfigured"
    assert "SPOOL_WEBHOOKS" not in reply.body.decode()


@pytest.mark.parametrize(
    "tenant", ["a b", "acme ", "", "*", "x" * 65, "whsec_pasted+here="], ids=repr
)
def test_an_entry_for_a_name_no_tenant_can_have_is_refused(tenant: str) -> None:
    """ "acme " with a stray space was taken and never matched a key's tenant: acme's jobs
    could not ask for webhooks (422) and the operator had no word why. The tenant limits
    and weights already refuse such names; SPOOL_WEBHOOKS names it the same way, and a
    secret pasted where the tenant goes is not echoed."""
    from chalicelib.config import ConfigError, Settings
    from chalicelib.webhooks import config

    raw = json.dumps({tenant: {"secrets": [SECRET]}})
    with pytest.raises(ConfigError) as raised:
        config.from_settings(Settings(extra={"SPOOL_WEBHOOKS": raw}))
    message = str(raised.value)
    assert message.startswith("SPOOL_WEBHOOKS: ") and "is no tenant's name" in message
    assert "1-64 of [A-Za-z0-9_.:-]" in message and SECRET not in message
    assert "pasted-here" not in message


@pytest.mark.parametrize("tenant", ["acme", "x" * 64, "acme.eu:prod-1_A"])
def test_an_entry_for_a_tenant_name_is_taken(tenant: str) -> None:
    from chalicelib.config import Settings
    from chalicelib.webhooks import config

    raw = json.dumps({tenant: {"secrets": [SECRET]}})
    assert config.from_settings(Settings(extra={"SPOOL_WEBHOOKS": raw})).tenant(tenant)

"""Which ports a callback URL may name (SPOOL_WEBHOOK_PORTS).

A callback URL is the enqueuer's choice and the delivery leaves from the
operator's network and address. Ports were unrestricted, so any tenant could
make Spool POST to a public host's SMTP (25), SSH (22) or LDAP (389) port, or,
where SPOOL_WEBHOOK_ALLOW_PRIVATE is on, to a private service on its own port.
A webhook receiver is a web server: by default 80, 443 and the unprivileged
ports (1024-65535, where development and alternative HTTP servers listen) are
allowed; the privileged ports of other protocols are refused at enqueue (422,
nothing stored), in the operator's own default endpoint at start, and again at
each delivery, so narrowing the setting also stops deliveries already queued.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from chalice.test import Client

import app as spool_app
from chalicelib import ssrf
from chalicelib.clock import FakeClock
from chalicelib.config import ConfigError, Settings
from chalicelib.models import Completion, JobState
from chalicelib.storage.memory import MemoryStore
from chalicelib.webhooks import config
from chalicelib.webhooks.deliver import Deliverer
from tests.apikit import KEY_A, Api, installed, settings_for
from tests.factories import new_job
from tests.webhook_receiver import Receiver

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
HOOKS = json.dumps({"tenant-a": {"secrets": [SECRET]}})


def api_for(tmp_path, **extra: str) -> Iterator[Api]:
    settings = settings_for(tmp_path, extra={"SPOOL_WEBHOOKS": HOOKS, **extra})
    with installed(settings), Client(spool_app.app) as client:
        yield Api(client)


@pytest.fixture
def api(tmp_path) -> Iterator[Api]:
    yield from api_for(tmp_path)


@pytest.fixture
def narrow(tmp_path) -> Iterator[Api]:
    yield from api_for(tmp_path, SPOOL_WEBHOOK_PORTS="443, 8000-8999")


def stored(api: Api) -> list[object]:
    return list(api.get("/jobs", key=KEY_A).json["jobs"])


@pytest.mark.parametrize(
    "url",
    [
        "http://hooks.example.com:25/",  # SMTP
        "http://hooks.example.com:22/",  # SSH
        "https://hooks.example.com:389/",  # LDAP
        "http://hooks.example.com:1/",
        "http://hooks.example.com:1023/",
        "http://93.184.216.34:587/",  # an IP literal too
        "https://[2606:2800:220:1::1]:465/",
    ],
)
def test_a_privileged_port_other_than_80_and_443_is_a_422(api: Api, url: str) -> None:
    reply = api.post("/enqueue", {"type": "echo", "callback_url": url})
    assert reply.status == 422, (url, reply.body)
    assert reply.json["error"]["details"] == {"field": "callback_url", "loc": ["callback_url"]}
    assert "SPOOL_WEBHOOK_PORTS" in reply.json["error"]["message"]
    assert stored(api) == []


@pytest.mark.parametrize(
    "url",
    [
        "https://hooks.example.com/",
        "http://hooks.example.com/",
        "https://hooks.example.com:443/x",
        "http://hooks.example.com:80/x",
        "https://hooks.example.com:8443/",
        "http://hooks.example.com:3000/",
        "http://hooks.example.com:1024/",
        "http://hooks.example.com:65535/",
    ],
)
def test_web_ports_are_allowed_by_default(api: Api, url: str) -> None:
    reply = api.post("/enqueue", {"type": "echo", "callback_url": url})
    assert reply.status == 201, (url, reply.body)


def test_one_refused_port_in_a_batch_stores_none(api: Api) -> None:
    jobs = [
        {"type": "echo", "callback_url": "https://hooks.example.com/"},
        {"type": "echo", "callback_url": "http://hooks.example.com:25/"},
    ]
    reply = api.post("/enqueue", {"jobs": jobs})
    assert reply.status == 422
    assert reply.json["error"]["details"][0]["index"] == 1
    assert stored(api) == []


@pytest.mark.parametrize(
    ("url", "status"),
    [
        ("https://hooks.example.com/", 201),
        ("https://hooks.example.com:8080/", 201),
        ("http://hooks.example.com/", 422),  # 80 is not in the list
        ("https://hooks.example.com:9000/", 422),
    ],
)
def test_the_setting_narrows_the_ports(narrow: Api, url: str, status: int) -> None:
    reply = narrow.post("/enqueue", {"type": "echo", "callback_url": url})
    assert reply.status == status, (url, reply.body)
    if status == 422:
        assert "443, 8000-8999" in reply.json["error"]["message"]


@pytest.mark.parametrize(
    "value", ["0", "65536", "443-80", "http", "1-2-3", "-5", "443,,", "1e3", "٤٤٣"]
)
def test_a_malformed_setting_is_a_config_error_naming_it(value: str) -> None:
    values = {"SPOOL_WEBHOOKS": HOOKS, "SPOOL_WEBHOOK_PORTS": value}
    with pytest.raises(ConfigError, match="SPOOL_WEBHOOK_PORTS"):
        config.from_settings(Settings(extra=values))


def test_a_tenant_default_url_on_a_refused_port_is_a_config_error() -> None:
    hooks = {"acme": {"url": "http://hooks.example.com:25/", "secrets": [SECRET]}}
    with pytest.raises(ConfigError, match=r"SPOOL_WEBHOOKS\['acme'\].*SPOOL_WEBHOOK_PORTS"):
        config.from_settings(Settings(extra={"SPOOL_WEBHOOKS": json.dumps(hooks)}))


def test_the_port_is_checked_before_any_dns_lookup() -> None:
    policy = config.from_settings(Settings(extra={"SPOOL_WEBHOOKS": HOOKS})).policy

    def resolver(host: str, port: int) -> list[str]:
        raise AssertionError("resolved a name whose port is refused")

    with pytest.raises(ssrf.Refused, match="port 25"):
        ssrf.check_url("http://hooks.example.com:25/", policy, resolver)


def test_a_delivery_queued_before_the_setting_narrowed_fails_unsent(receiver: Receiver) -> None:
    store = MemoryStore(FakeClock())
    hooks = json.dumps({"acme": {"secrets": [SECRET]}})
    job = store.add([new_job(store.clock, tenant="acme", callback_url=receiver.url)])[0].job
    [running] = store.claim(1, 30)
    store.finish([Completion(job.id, running.lease_token or "", JobState.SUCCEEDED)])
    values = {
        "SPOOL_WEBHOOKS": hooks,
        "SPOOL_WEBHOOK_ALLOW_PRIVATE": "true",
        "SPOOL_WEBHOOK_PORTS": "443",  # the loopback receiver listens on a high port
    }
    deliverer = Deliverer(store, Settings(extra=values))
    deliverer.drain()
    [delivery] = store.webhooks(job.id)
    assert delivery.state == "failed" and delivery.attempts == 1
    assert "SPOOL_WEBHOOK_PORTS" in (delivery.last_error or "")
    assert receiver.requests == []

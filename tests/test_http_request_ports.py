"""Which ports an `http_request` job may name (SPOOL_HTTP_PORTS), as callback URLs
have SPOOL_WEBHOOK_PORTS (tests/test_webhook_ports.py).

The allowlist names hosts, but `*.example.com` or a CIDR such as `10.0.0.0/8` opens
every port of every host they hold: a tenant could POST to an internal SMTP, SSH or
LDAP port, or walk an internal host's ports. By default 80, 443 and 1024-65535 are
allowed; another is refused at enqueue (422), on every redirect hop, and a malformed
setting stops the worker at start.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from chalicelib import ssrf
from chalicelib.builtin import http_request as hr
from chalicelib.config import Settings
from chalicelib.errors import PermanentError, ValidationFailed
from tests.test_http_request import Jail, _enqueue, jailed

WIDE = "*.example.com, 10.0.0.0/8"


@pytest.fixture
def jail(monkeypatch: pytest.MonkeyPatch) -> Iterator[Jail]:
    """Nothing leaves 127.0.0.0/8, and every DNS lookup is recorded."""
    with jailed(monkeypatch) as state:
        yield state


@pytest.mark.parametrize(
    "url",
    [
        "http://mail.example.com:25/",
        "https://api.example.com:22/",
        "http://10.1.2.3:389/",
        "http://api.example.com:1023/",
    ],
)
def test_a_privileged_port_other_than_80_and_443_is_refused_at_enqueue(
    monkeypatch: pytest.MonkeyPatch, jail: Jail, url: str
) -> None:
    monkeypatch.setenv("SPOOL_HTTP_ALLOWLIST", WIDE)
    monkeypatch.setenv("SPOOL_HTTP_ALLOW_PRIVATE", "true")
    with pytest.raises(ValidationFailed, match="SPOOL_HTTP_PORTS") as refused:
        _enqueue(url)
    assert refused.value.status == 422
    assert jail.lookups == []


@pytest.mark.parametrize(
    "url", ["https://api.example.com/", "http://api.example.com/", "https://a.example.com:8443/"]
)
def test_web_ports_are_allowed_by_default(
    monkeypatch: pytest.MonkeyPatch, jail: Jail, url: str
) -> None:
    monkeypatch.setenv("SPOOL_HTTP_ALLOWLIST", WIDE)
    store, [added] = _enqueue(url)
    assert store.get(added.job.id) is not None


def test_the_setting_narrows_the_ports(monkeypatch: pytest.MonkeyPatch, jail: Jail) -> None:
    monkeypatch.setenv("SPOOL_HTTP_ALLOWLIST", WIDE)
    monkeypatch.setenv("SPOOL_HTTP_PORTS", "443")
    _enqueue("https://api.example.com/")
    with pytest.raises(ValidationFailed, match=r"port 80 .*SPOOL_HTTP_PORTS: 443"):
        _enqueue("http://api.example.com/")


def test_a_redirect_to_a_refused_port_is_refused_before_any_lookup() -> None:
    policy, _ = hr.policy_from(Settings(extra={"SPOOL_HTTP_ALLOWLIST": WIDE}))

    def resolver(host: str, port: int) -> list[str]:
        raise AssertionError("resolved a name whose port is refused")

    with pytest.raises(ssrf.Refused, match="port 25"):
        ssrf.check_url("http://mail.example.com:25/", policy, resolver)


@pytest.mark.parametrize("value", ["0", "70000", "443-80", "smtp", "443,"])
def test_a_malformed_setting_is_a_permanent_error_naming_it(value: str) -> None:
    settings = Settings(extra={"SPOOL_HTTP_ALLOWLIST": WIDE, "SPOOL_HTTP_PORTS": value})
    with pytest.raises(PermanentError, match="SPOOL_HTTP_PORTS"):
        hr.policy_from(settings)

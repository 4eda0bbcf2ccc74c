"""API keys from SSM Parameter Store (chalicelib/api/key_source.py), under moto.

A deployed stage reads its tenant keys from a SecureString parameter, cached
for SPOOL_API_KEYS_TTL seconds: the key works, a rotation takes effect once the
TTL passes, and a parameter that cannot be read is a 503, never a 500 and
never an open door. The test clock moves time; nothing sleeps.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws

from chalicelib.api import key_source
from chalicelib.api.auth import hashed_entry
from chalicelib.clock import FakeClock
from chalicelib.config import Settings
from chalicelib.errors import Unauthorized

PARAM = "/spool/test/api-keys"
OLD_KEY, NEW_KEY, TENANT = "old-key-0123456789", "new-key-9876543210", "acme"


def ssm_settings(**extra: str) -> Settings:
    return Settings(api_keys="", extra={key_source.PARAMETER: PARAM, **extra})


@pytest.fixture
def ssm() -> Iterator[Any]:
    with mock_aws():
        yield boto3.client("ssm", region_name="us-east-1")


@pytest.fixture
def source(clock: FakeClock) -> Iterator[key_source.KeySource]:
    key_source.reset(clock)
    yield key_source.source()
    key_source.reset()


def put(ssm: Any, key: str, tenant: str = TENANT) -> None:
    ssm.put_parameter(
        Name=PARAM, Type="SecureString", Value=hashed_entry(key, tenant), Overwrite=True
    )


def test_keys_come_from_the_secure_string_parameter(ssm: Any, source: Any) -> None:
    put(ssm, OLD_KEY)
    settings = ssm_settings()
    assert key_source.load_api_keys(settings) == hashed_entry(OLD_KEY, TENANT)
    assert key_source.keyring(settings).tenant_for(OLD_KEY) == TENANT


def test_spool_api_keys_wins_over_the_parameter(source: Any) -> None:
    """No AWS at all: the parameter is never read when SPOOL_API_KEYS is set."""
    calls: list[str] = []

    class Refusing:
        def get_parameter(self, *, Name: str, WithDecryption: bool) -> Mapping[str, Any]:
            calls.append(Name)
            raise AssertionError("SSM must not be read")

    key_source.reset(client=lambda settings: Refusing())
    settings = Settings(api_keys=f"{OLD_KEY}={TENANT}", extra={key_source.PARAMETER: PARAM})
    assert key_source.load_api_keys(settings) == f"{OLD_KEY}={TENANT}"
    assert key_source.keyring(settings).tenant_for(OLD_KEY) == TENANT
    assert calls == []


def test_a_rotated_key_takes_effect_after_the_ttl(ssm: Any, source: Any, clock: FakeClock) -> None:
    put(ssm, OLD_KEY)
    settings = ssm_settings(SPOOL_API_KEYS_TTL="30")
    assert key_source.keyring(settings).tenant_for(OLD_KEY) == TENANT
    put(ssm, NEW_KEY)
    clock.advance(29)  # still cached: one SSM read per TTL, not per request
    assert key_source.keyring(settings).tenant_for(OLD_KEY) == TENANT
    clock.advance(2)
    keys = key_source.keyring(settings)
    assert keys.tenant_for(NEW_KEY) == TENANT
    with pytest.raises(Unauthorized):
        keys.tenant_for(OLD_KEY)


def test_the_default_ttl_is_a_minute(ssm: Any, source: Any, clock: FakeClock) -> None:
    put(ssm, OLD_KEY)
    settings = ssm_settings()
    key_source.keyring(settings)
    put(ssm, NEW_KEY)
    clock.advance(59)
    assert key_source.keyring(settings).match(NEW_KEY) is None
    clock.advance(2)
    assert key_source.keyring(settings).match(NEW_KEY) == TENANT


def test_a_missing_parameter_is_503_and_names_no_value(
    ssm: Any, source: Any, caplog: pytest.LogCaptureFixture
) -> None:
    logs = caplog.at_level(logging.ERROR, "spool.api.keys")
    with logs, pytest.raises(key_source.KeysUnavailable) as raised:
        key_source.keyring(ssm_settings())
    assert raised.value.status == 503 and raised.value.code == "keys_unavailable"
    assert PARAM not in raised.value.message  # the client learns nothing of the setup
    assert "ParameterNotFound" in caplog.text and PARAM in caplog.text  # the operator does


def test_a_blip_keeps_the_last_good_keys_then_refuses(
    ssm: Any, source: Any, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    put(ssm, OLD_KEY)
    settings = ssm_settings()
    key_source.keyring(settings)
    ssm.delete_parameter(Name=PARAM)  # from here on every read fails
    clock.advance(61)
    with caplog.at_level(logging.WARNING, "spool.api.keys"):
        assert key_source.keyring(settings).tenant_for(OLD_KEY) == TENANT
    assert "keeping the last good keys" in caplog.text
    clock.advance(key_source.STALE_LIMIT)
    with pytest.raises(key_source.KeysUnavailable):
        key_source.keyring(settings)


def test_a_malformed_value_is_503_and_never_logged(
    ssm: Any, source: Any, caplog: pytest.LogCaptureFixture
) -> None:
    secret = "s3cret-key-with space=acme"
    ssm.put_parameter(Name=PARAM, Type="SecureString", Value=secret, Overwrite=True)
    with caplog.at_level(logging.DEBUG, "spool"), pytest.raises(key_source.KeysUnavailable):
        key_source.keyring(ssm_settings())
    assert "malformed value" in caplog.text
    assert "s3cret" not in caplog.text


def test_a_malformed_rotation_keeps_the_previous_keys(
    ssm: Any, source: Any, clock: FakeClock
) -> None:
    """Those it still lists: one it no longer lists stops within the TTL, malformed or
    not (tests/test_attack_s62B_key_rotation.py)."""
    put(ssm, OLD_KEY)
    settings = ssm_settings()
    key_source.keyring(settings)
    value = f"{hashed_entry(OLD_KEY, TENANT)},no-tenant-here"
    ssm.put_parameter(Name=PARAM, Type="SecureString", Value=value, Overwrite=True)
    clock.advance(61)
    assert key_source.keyring(settings).tenant_for(OLD_KEY) == TENANT


def test_reads_decrypt_and_are_shared_within_the_ttl(source: Any, clock: FakeClock) -> None:
    asked: list[tuple[str, bool]] = []

    class Recording:
        def get_parameter(self, *, Name: str, WithDecryption: bool) -> Mapping[str, Any]:
            asked.append((Name, WithDecryption))
            return {"Parameter": {"Value": hashed_entry(OLD_KEY, TENANT)}}

    key_source.reset(clock, client=lambda settings: Recording())
    settings = ssm_settings()
    for _ in range(50):
        key_source.keyring(settings)
    assert asked == [(PARAM, True)]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({key_source.PARAMETER: "spool prod keys"}, key_source.PARAMETER),
        ({key_source.PARAMETER: PARAM, key_source.TTL: "soon"}, key_source.TTL),
        ({key_source.PARAMETER: PARAM, key_source.TTL: "-1"}, key_source.TTL),
    ],
)
def test_bad_key_settings_fail_at_start_up(extra: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        key_source.validate(Settings(api_keys="", extra=extra))


def test_validate_does_not_read_ssm(source: Any) -> None:
    class Refusing:
        def get_parameter(self, *, Name: str, WithDecryption: bool) -> Mapping[str, Any]:
            raise AssertionError("validate must not read SSM")

    key_source.reset(client=lambda settings: Refusing())
    key_source.validate(ssm_settings())
    with pytest.raises(ValueError, match="SPOOL_API_KEYS"):
        key_source.validate(Settings(api_keys="no-tenant-here"))


# -- the HTTP edge, once routes.py reads its keys through key_source -----------------------


@pytest.fixture
def rt(tmp_path: Path, clock: FakeClock) -> Iterator[Any]:
    """Overrides conftest's `rt`: SPOOL_API_KEYS unset, the keys in moto's SSM."""
    from tests.apikit import installed, settings_for

    with mock_aws():
        client = boto3.client("ssm", region_name="us-east-1")
        client.put_parameter(Name=PARAM, Type="SecureString", Value=hashed_entry(OLD_KEY, TENANT))
        key_source.reset(clock)
        settings = settings_for(tmp_path, api_keys="", extra={key_source.PARAMETER: PARAM})
        with installed(settings) as runtime:
            yield runtime
        key_source.reset()


def test_http_keys_from_ssm_and_rotation(api: Any, clock: FakeClock) -> None:
    job = {"type": "echo", "payload": {"n": 1}}
    assert api.post("/enqueue", job, key=OLD_KEY).status == 201
    boto3.client("ssm", region_name="us-east-1").put_parameter(
        Name=PARAM, Type="SecureString", Value=hashed_entry(NEW_KEY, TENANT), Overwrite=True
    )
    assert api.post("/enqueue", job, key=OLD_KEY).status == 201  # cached for the TTL
    clock.advance(key_source.DEFAULT_TTL + 1)
    refused = api.post("/enqueue", job, key=OLD_KEY)
    assert refused.status == 401 and refused.error_code == "unauthorized"
    assert api.post("/enqueue", job, key=NEW_KEY).status == 201
    assert api.get("/health", key=None).status == 200  # no key, no SSM read needed


def test_http_unreadable_keys_are_503_not_500(api: Any) -> None:
    boto3.client("ssm", region_name="us-east-1").delete_parameter(Name=PARAM)
    key_source.reset(FakeClock())
    reply = api.post("/enqueue", {"type": "echo", "payload": {}}, key=OLD_KEY)
    assert reply.status == 503 and reply.error_code == "keys_unavailable"
    assert reply.header("Retry-After") == str(int(key_source.RETRY_AFTER))

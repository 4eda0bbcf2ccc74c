"""A key the operator took out of the SSM parameter stops working within the TTL, even
when the new value is malformed.

Found from outside (stop 62): `spool serve` reading its keys from SSM (moto_server,
SPOOL_API_KEYS_PARAMETER, SPOOL_API_KEYS_TTL=1) with a leaked key listed; the operator
revoked it by writing the parameter again with only a new key for the same tenant,
which was one character short (15: "malformed value: the key for acme ... is shorter
than 16 characters"). The leaked key kept answering 200 past the TTL, for up to
STALE_LIMIT (15 minutes) more, in every container that had read the parameter before:
a malformed value was kept apart as a "blip" (the last good keys served whole), though
the read had worked and said which keys are no longer wanted. A container started
after the bad write answered 503 for the same value.

Now a malformed value still revokes: a container keeps, of its last good keys, only
those the new value still lists as a well-formed entry (the same key or digest for the
same tenant), and answers 503 `keys_unavailable` when it lists none of them, as a
container reading the value first does. A read that fails (SSM unreachable, denied,
the parameter missing) is a blip as before: the last good keys, whole.
"""

from __future__ import annotations

from collections.abc import Iterator
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

PARAM = "/spool/s62b/api-keys"
LEAKED, KEPT, SHORT = "leaked-key-0123456789abc", "kept-key-0123456789abcd", "new-key-1234567"
TENANT, OTHER = "acme", "globex"


def _settings() -> Settings:
    return Settings(api_keys="", extra={key_source.PARAMETER: PARAM})


def _put(value: str) -> None:
    boto3.client("ssm", region_name="us-east-1").put_parameter(
        Name=PARAM, Type="SecureString", Value=value, Overwrite=True
    )


@pytest.fixture
def source(clock: FakeClock) -> Iterator[None]:
    with mock_aws():
        key_source.reset(clock)
        yield
        key_source.reset()


def test_a_key_dropped_by_a_malformed_value_stops_after_the_ttl(
    source: None, clock: FakeClock
) -> None:
    _put(f"{hashed_entry(LEAKED, TENANT)},{hashed_entry(KEPT, OTHER)}")
    assert key_source.keyring(_settings()).tenant_for(LEAKED) == TENANT
    # The leaked key taken out; the new one for acme one character short (malformed).
    _put(f"{SHORT}={TENANT},{hashed_entry(KEPT, OTHER)}")
    clock.advance(key_source.DEFAULT_TTL + 1)
    keys = key_source.keyring(_settings())
    with pytest.raises(Unauthorized):
        keys.tenant_for(LEAKED)
    assert keys.tenant_for(KEPT) == OTHER  # still listed: globex is not taken down


def test_a_plain_key_still_listed_is_kept_whatever_its_form(source: None, clock: FakeClock) -> None:
    """The entry compared is the key's digest and its tenant: written plain before and as
    a digest now (or the other way round), it is the same key."""
    _put(f"{KEPT}={OTHER},{hashed_entry(LEAKED, TENANT)}")
    key_source.keyring(_settings())
    _put(f"{hashed_entry(KEPT, OTHER)},{SHORT}={TENANT}")
    clock.advance(key_source.DEFAULT_TTL + 1)
    keys = key_source.keyring(_settings())
    assert keys.tenant_for(KEPT) == OTHER
    assert keys.match(LEAKED) is None


def test_a_key_listed_again_for_another_tenant_is_not_kept(source: None, clock: FakeClock) -> None:
    """Kept means the same key for the same tenant: a malformed value that names the
    leaked key for someone else moves it nowhere."""
    _put(hashed_entry(LEAKED, TENANT))
    key_source.keyring(_settings())
    _put(f"{hashed_entry(LEAKED, OTHER)},{SHORT}={TENANT}")
    clock.advance(key_source.DEFAULT_TTL + 1)
    with pytest.raises(key_source.KeysUnavailable):
        key_source.keyring(_settings())


def test_a_malformed_value_listing_none_of_the_keys_is_503(source: None, clock: FakeClock) -> None:
    """As a container reading that value first answers: never the dropped keys."""
    _put(hashed_entry(LEAKED, TENANT))
    key_source.keyring(_settings())
    _put("no-tenant-here")
    clock.advance(key_source.DEFAULT_TTL + 1)
    with pytest.raises(key_source.KeysUnavailable):
        key_source.keyring(_settings())


def test_a_failed_read_still_keeps_the_last_good_keys_whole(source: None, clock: FakeClock) -> None:
    """A read that fails says nothing of which keys are wanted: an SSM blip is not a
    revocation (unchanged)."""
    _put(hashed_entry(LEAKED, TENANT))
    key_source.keyring(_settings())
    boto3.client("ssm", region_name="us-east-1").delete_parameter(Name=PARAM)
    clock.advance(key_source.DEFAULT_TTL + 1)
    assert key_source.keyring(_settings()).tenant_for(LEAKED) == TENANT


# -- the HTTP edge ----------------------------------------------------------------------


@pytest.fixture
def rt(tmp_path: Path, clock: FakeClock) -> Iterator[Any]:
    """Overrides conftest's `rt`: SPOOL_API_KEYS unset, the keys in moto's SSM."""
    from tests.apikit import installed, settings_for

    with mock_aws():
        _put(f"{hashed_entry(LEAKED, TENANT)},{hashed_entry(KEPT, OTHER)}")
        key_source.reset(clock)
        settings = settings_for(tmp_path, api_keys="", extra={key_source.PARAMETER: PARAM})
        with installed(settings) as runtime:
            yield runtime
        key_source.reset()


def test_http_a_revoked_key_is_401_after_a_malformed_rotation(api: Any, clock: FakeClock) -> None:
    assert api.get("/jobs", key=LEAKED).status == 200
    _put(f"{SHORT}={TENANT},{hashed_entry(KEPT, OTHER)}")
    clock.advance(key_source.DEFAULT_TTL + 1)
    refused = api.get("/jobs", key=LEAKED)
    assert refused.status == 401 and refused.error_code == "unauthorized"
    assert api.get("/jobs", key=KEPT).status == 200

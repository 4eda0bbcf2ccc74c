"""The 401 for a wrong key named SPOOL_API_KEYS also when the server reads its keys
from an SSM parameter (SPOOL_API_KEYS_PARAMETER), where that variable is not set.

Found from outside (stop 62): `spool serve` with only SPOOL_API_KEYS_PARAMETER
(moto_server); curl with a wrong key got "send one of the keys in the server's
SPOOL_API_KEYS", and the dashboard showed the same after a revocation. The text now
says "one of this server's API keys", true for both sources, and never the parameter's
path (the caller is not authenticated). The command line no longer compares the
server's whole text: any "invalid API key: ..." refusal is said in its own terms, so a
server with other wording (older, newer) still gets the --key / SPOOL_API_KEY advice.
"""

from __future__ import annotations

from collections.abc import Iterator

import boto3
import pytest
from moto import mock_aws

from chalicelib.api import key_source
from chalicelib.api.auth import INVALID_KEY
from chalicelib.clock import FakeClock
from chalicelib.config import Settings
from chalicelib.errors import Unauthorized
from local import remote_cli
from spool_client import errors as client_errors

PARAM = "/spool/s62b/secret-path/api-keys"
KEY = "ssm-key-0123456789abcdef"


@pytest.fixture
def ssm_keys(clock: FakeClock) -> Iterator[Settings]:
    with mock_aws():
        boto3.client("ssm", region_name="us-east-1").put_parameter(
            Name=PARAM, Type="SecureString", Value=f"{KEY}=acme", Overwrite=True
        )
        key_source.reset(clock)
        yield Settings(api_keys="", extra={key_source.PARAMETER: PARAM})
        key_source.reset()


def test_a_wrong_key_on_an_ssm_server_is_not_told_of_spool_api_keys(ssm_keys: Settings) -> None:
    with pytest.raises(Unauthorized) as refused:
        key_source.keyring(ssm_keys).tenant_for("wrong-key-0123456789")
    message = refused.value.message
    assert message.startswith(f"{INVALID_KEY}: ")
    assert "SPOOL_API_KEYS" not in message  # not where this server's keys are
    assert "API keys" in message and "X-API-Key" in message
    assert PARAM not in message and "secret-path" not in message  # never the path


@pytest.mark.parametrize(
    "text",
    [
        "invalid API key",
        "invalid API key: send one of the keys in the server's SPOOL_API_KEYS, in the "
        "X-API-Key header (an older server's words)",
        "invalid API key: some future wording",
    ],
)
def test_the_command_line_says_its_own_fix_whatever_the_servers_words(text: str) -> None:
    failure = remote_cli.explain(client_errors.Unauthorized(401, "unauthorized", text))
    assert failure.problem == INVALID_KEY
    assert "--key" in failure.fix and "SPOOL_API_KEY" in failure.fix

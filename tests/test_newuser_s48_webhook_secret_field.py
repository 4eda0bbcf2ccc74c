"""SPOOL_WEBHOOKS' one-secret spelling, "secret", says what it takes.

Found configuring webhooks as a new user: `{"acme": {"secret": ["whsec_..."]}}`
(a list, as "secrets" takes) was refused with "secret 1 must be a string", though
secret 1 was a string, inside a list; and `"secrets"` beside `"secret"` dropped
the second without a word, so a rotation written that way signed with one secret.
"""

from __future__ import annotations

import json

import pytest

from chalicelib.config import ConfigError
from chalicelib.webhooks import config, signing

NEW, OLD = signing.new_secret(), signing.new_secret()


def refusal(entry: dict[str, object]) -> str:
    with pytest.raises(ConfigError) as refused:
        config.parse_tenants(json.dumps({"acme": entry}))
    message = str(refused.value)
    assert NEW not in message and OLD not in message
    return message


def test_a_list_given_as_secret_is_told_to_use_secrets() -> None:
    message = refusal({"secret": [NEW]})
    assert message == (
        "SPOOL_WEBHOOKS['acme']: \"secret\" takes one secret, as a string; "
        'give a list as "secrets": ["whsec_..."]'
    )


def test_secret_beside_secrets_is_refused_rather_than_dropped() -> None:
    message = refusal({"secrets": [NEW], "secret": OLD})
    assert message == (
        'SPOOL_WEBHOOKS[\'acme\']: give "secrets" (a list) or "secret" (one), not both: '
        'put every secret in "secrets"'
    )


def test_one_secret_as_secret_still_works() -> None:
    [hooks] = config.parse_tenants(json.dumps({"acme": {"secret": NEW}})).values()
    assert hooks.keys == (signing.decode_secret(NEW),)

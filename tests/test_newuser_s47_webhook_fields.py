"""A misspelt field in a SPOOL_WEBHOOKS entry is named, with the fields it takes.

`{"acme": {"urll": "https://...", "secrets": [...]}}` stopped `spool serve` with
`SPOOL_WEBHOOKS['acme'] must be an object with "url" and "secrets"`, which the entry
was, give or take a letter, and the newcomer had to find which. SPOOL_LIMITS and
SPOOL_TENANT_LIMITS name an unknown field; SPOOL_WEBHOOKS now does too. A field that
looks like a signing secret (`whsec_...`, pasted as a name) is still not shown.
"""

from __future__ import annotations

import json

import pytest

from chalicelib.config import ConfigError
from chalicelib.webhooks.config import parse_tenants

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def test_an_unknown_field_is_named_with_the_ones_taken() -> None:
    raw = json.dumps({"acme": {"urll": "https://hooks.example.com/", "secrets": [SECRET]}})
    with pytest.raises(ConfigError) as refused:
        parse_tenants(raw)
    said = str(refused.value)
    assert "SPOOL_WEBHOOKS['acme']" in said and "'urll'" in said
    assert "url, secrets" in said and SECRET not in said


def test_a_secret_pasted_as_a_field_name_is_not_shown() -> None:
    with pytest.raises(ConfigError) as refused:
        parse_tenants(json.dumps({"acme": {SECRET: True}}))
    assert SECRET not in str(refused.value)


def test_an_entry_that_is_no_object_reads_as_before() -> None:
    with pytest.raises(ConfigError, match=r"SPOOL_WEBHOOKS\['acme'\] must be an object with"):
        parse_tenants(json.dumps({"acme": ["https://hooks.example.com/"]}))

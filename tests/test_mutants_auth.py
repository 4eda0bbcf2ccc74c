"""chalicelib/api/auth.py: what `make mutation` found untested.

Written to kill the mutants `make mutation MUTANTS='chalicelib.api.auth*'` left
alive (docs/testing.md): an empty entry in the middle of a key list, the exact
words an operator reads when a key list is malformed, and the exact words a
/metrics client reads, which differ with and without operator keys configured.
"""

from __future__ import annotations

import re

import pytest

from chalicelib.api.auth import Forbidden, Keyring, operator_keys
from chalicelib.errors import SpoolError
from tests.apikit import KEY_B
from tests.test_api_auth import OPERATOR_KEY, metrics_settings, refusal

NAMES = "(names: [A-Za-z0-9_.:-])"
TENANT_FORM = f"SPOOL_API_KEYS entries must be key=tenant {NAMES}"
OPERATOR_FORM = (
    f"SPOOL_METRICS_KEYS entries must be key, or key=name (a key with = needs =name) {NAMES}"
)
WITH_OPERATORS = (
    "/metrics needs an operator key from SPOOL_METRICS_KEYS, sent in the X-API-Key header "
    "or as Authorization: Bearer"
)
WITHOUT_OPERATORS = (
    "/metrics needs an operator key, and none is configured: set SPOOL_METRICS_KEYS "
    "(comma-separated keys, or sha256:<hex> digests) or SPOOL_METRICS_PUBLIC=true, "
    "which shows every queue name to anyone"
)


def refused(message: str) -> pytest.RaisesExc[ValueError]:
    """A ValueError with exactly this message, not one that merely contains it."""
    return pytest.raises(ValueError, match=f"^{re.escape(message)}$")


# Keys of the minimum length (chalicelib.api.auth.MIN_KEY_LENGTH).
K1, K2 = "k1-0123456789abc", "k2-0123456789abc"


@pytest.mark.parametrize(
    "spec",
    [
        s.replace("k1", K1).replace("k2", K2)
        for s in ("k1=a,,k2=b", "k1=a, ,k2=b", ",k1=a,k2=b", "k1=a,k2=b,", " , k1=a ,\t, k2=b , ")
    ],
    ids=["double", "blank", "leading", "trailing", "spaced"],
)
def test_an_empty_entry_anywhere_in_the_list_is_skipped(spec: str) -> None:
    ring = Keyring.parse(spec)
    assert ring.match(K1) == "a"
    assert ring.match(K2) == "b"
    assert len(ring.entries) == 2


@pytest.mark.parametrize("spec", ["no-tenant", "=tenant", "key=", "key=bad tenant", f"{K1}=a,=b"])
def test_a_malformed_tenant_entry_names_the_form(spec: str) -> None:
    with refused(TENANT_FORM):
        Keyring.parse(spec)


@pytest.mark.parametrize("spec", ["=ops", "abc==", "key=bad name"])
def test_a_malformed_operator_entry_names_the_form(spec: str) -> None:
    with refused(OPERATOR_FORM):
        operator_keys(spec)


@pytest.mark.parametrize("key", ["two words", "cl\u00e9"])
def test_a_key_no_header_can_carry_is_refused_saying_why(key: str) -> None:
    with refused(
        "the key for alpha in SPOOL_API_KEYS holds a space or a character that is "
        "not visible ASCII, which an X-API-Key header cannot carry"
    ):
        Keyring.parse(f"{key}=alpha")


def test_a_keyring_is_true_exactly_when_it_holds_a_key() -> None:
    assert Keyring.parse(f"{K1}=a")
    assert operator_keys("ops-key-0123456789")
    assert not Keyring.parse("")
    assert not Keyring.parse(" , ")


def message(error: SpoolError | None) -> str:
    assert error is not None
    return error.message


def test_metrics_refusals_say_how_when_operator_keys_are_configured() -> None:
    settings = metrics_settings(SPOOL_METRICS_KEYS=f"{OPERATOR_KEY}=ops")
    assert message(refusal(settings, None)) == f"missing API key: {WITH_OPERATORS}"
    assert message(refusal(settings, "nobody's-key")) == f"invalid API key: {WITH_OPERATORS}"
    tenant = refusal(settings, KEY_B)
    assert isinstance(tenant, Forbidden)
    assert message(tenant) == (
        "a tenant's API key does not open /metrics, which shows every tenant's queues: "
        f"{WITH_OPERATORS}"
    )


def test_metrics_refusals_say_how_when_no_operator_key_is_configured() -> None:
    settings = metrics_settings()
    assert message(refusal(settings, None)) == f"missing API key: {WITHOUT_OPERATORS}"
    assert message(refusal(settings, "nobody's-key")) == f"invalid API key: {WITHOUT_OPERATORS}"


def test_a_key_one_short_of_the_minimum_is_refused_with_the_exact_message() -> None:
    with refused(
        "the key for alpha in SPOOL_API_KEYS is shorter than 16 characters, which can be "
        'guessed: make one with `python -c "import secrets; print(secrets.token_urlsafe(32))"`'
    ):
        Keyring.parse(f"{K1[:-1]}=alpha")
    with refused(
        "the key for operator in SPOOL_METRICS_KEYS is shorter than 16 characters, which can "
        'be guessed: make one with `python -c "import secrets; print(secrets.token_urlsafe(32))"`'
    ):
        operator_keys(K1[:-1])
    assert Keyring.parse(f"{K1}=alpha").match(K1) == "alpha"  # exactly 16: enough

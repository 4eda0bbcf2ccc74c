"""A SPOOL_API_KEYS entry written tenant=key is said to be the wrong way round.

`SPOOL_API_KEYS=default=dev-my-own-laptop-key` (the README's entry, its two halves
swapped) was refused as "the key for dev-my-own-laptop-key in SPOOL_API_KEYS is
shorter than 16 characters": the refusal that promises to name the tenant, never the
key, printed the newcomer's key and called it a tenant, and left the order to be
guessed at. Such an entry (a short key, a tenant long enough to be a key) now says
that the key goes first, and shows neither half.
"""

from __future__ import annotations

import pytest

from chalicelib.api.auth import Keyring

KEY = "dev-my-own-laptop-key"


@pytest.mark.parametrize("setting", ["SPOOL_API_KEYS", "SPOOL_METRICS_KEYS"])
def test_a_swapped_entry_says_the_key_goes_first_and_shows_neither_half(setting: str) -> None:
    unnamed = "operator" if setting == "SPOOL_METRICS_KEYS" else None
    with pytest.raises(ValueError) as refused:
        Keyring.parse(f"default={KEY}", setting, unnamed)
    said = str(refused.value)
    assert KEY not in said and "default" not in said
    assert setting in said and "the key first" in said


def test_a_short_key_for_a_short_tenant_is_refused_as_before() -> None:
    with pytest.raises(ValueError, match="the key for acme in SPOOL_API_KEYS is shorter than 16"):
        Keyring.parse("short-key=acme")

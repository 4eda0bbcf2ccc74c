"""Two tenants with one webhook secret: refused where the setting is read.

Found in s58 (helper C2) against a real `spool serve` whose SPOOL_WEBHOOKS gave
tenants `ta` and `tb` the same secret (a block copied for a new tenant, its secret
kept). A delivery's body names no tenant, and a tenant picks any callback_url its
jobs are delivered to, so the signature is all that tells a receiver which tenant a
delivery is for. Tenant `ta` enqueued a job with `tb`'s receiver as its
callback_url; `tb`'s receiver checked the delivery with spool_client.webhooks.verify
and `tb`'s secret, and took `ta`'s job.succeeded (and its result) as its own.
The setting was accepted without a word. Now a key that signs for one tenant is
refused for another (compared decoded, so a second base64 spelling of the same key
is the same key), at start as any malformed SPOOL_WEBHOOKS is.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from pathlib import Path

import pytest

from chalicelib.config import ConfigError
from chalicelib.webhooks import config, signing
from tests.procs import guarded_env

SPOOL = Path(sys.executable).with_name("spool")
KEYS = "ta-key-0123456789abcdef=ta,tb-key-0123456789abcdef=tb"
SHARED, OWN = signing.new_secret(), signing.new_secret()


def other_spelling(secret: str) -> str:
    """The same key in base64 with different unused bits in its last character: a
    32-byte key leaves two bits of that character unused, and decoding ignores them."""
    assert secret.endswith("=") and not secret.endswith("==")
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    last = secret[-2]
    twin = secret[:-2] + alphabet[alphabet.index(last) ^ 1] + "="
    assert twin != secret
    assert signing.decode_secret(twin) == signing.decode_secret(secret)
    return twin


def refused(tenants: dict[str, object]) -> str:
    with pytest.raises(ConfigError) as caught:
        config.parse_tenants(json.dumps(tenants))
    message = str(caught.value)
    for secret in (SHARED, OWN, other_spelling(SHARED)):
        assert secret not in message
        assert secret.removeprefix(signing.SECRET_PREFIX) not in message
    return message


def test_spool_serve_refuses_two_tenants_with_one_secret(tmp_path: Path) -> None:
    """Before: it started and served, and either tenant could send deliveries the
    other's receiver verified as its own."""
    hooks = {"ta": {"secrets": [SHARED]}, "tb": {"url": "https://tb.example/h", "secret": SHARED}}
    proc = subprocess.Popen(
        [str(SPOOL), "serve", "--port", "0", "--no-worker"],
        cwd=tmp_path,
        env=guarded_env(
            SPOOL_STORE_URL=f"sqlite:///{tmp_path}/spool.db",
            SPOOL_API_KEYS=KEYS,
            SPOOL_WEBHOOKS=json.dumps(hooks),
        ),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _, err = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        pytest.fail("spool serve started with two tenants sharing one webhook secret")
    assert proc.returncode == 2, err
    [line] = err.splitlines()
    assert line.startswith("spool: SPOOL_WEBHOOKS: 'ta' and 'tb' have the same webhook secret")
    assert SHARED not in err and SHARED.removeprefix(signing.SECRET_PREFIX) not in err


def test_a_second_spelling_of_the_key_is_the_same_key() -> None:
    message = refused({"ta": {"secrets": [SHARED]}, "tb": {"secrets": [other_spelling(SHARED)]}})
    assert message.startswith("SPOOL_WEBHOOKS: 'ta' and 'tb' have the same webhook secret")


def test_an_old_secret_kept_for_rotation_may_not_be_another_tenant_s() -> None:
    """The second secret signs too, so it binds as much as the first."""
    message = refused({"ta": {"secrets": [OWN, SHARED]}, "tb": {"secrets": [SHARED]}})
    assert "'ta' and 'tb'" in message


def test_the_parameter_s_value_is_held_to_the_same_rule() -> None:
    label = "the value of SSM parameter /spool/hooks"
    with pytest.raises(ConfigError) as caught:
        config.parse_tenants(json.dumps({"a": {"secret": SHARED}, "b": {"secret": SHARED}}), label)
    assert str(caught.value).startswith(f"{label}: 'a' and 'b' have the same webhook secret")


def test_own_secrets_and_one_key_given_twice_by_one_tenant_still_pass() -> None:
    """Distinct secrets are the normal case; one tenant naming its own key twice (a
    rotation step written twice) is redundant, not a way into another tenant."""
    parsed = config.parse_tenants(
        json.dumps({"ta": {"secrets": [SHARED, SHARED]}, "tb": {"secrets": [OWN]}})
    )
    assert parsed["ta"].keys == (base64.b64decode(SHARED[6:]),) * 2
    assert parsed["tb"].keys == (signing.decode_secret(OWN),)

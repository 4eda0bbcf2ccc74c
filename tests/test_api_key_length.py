"""API keys shorter than 16 characters are refused when the keys are read.

Keys are bearer secrets: `k=acme` or `dev-key=demo` was accepted and guessable.
SPOOL_API_KEYS (and the SSM parameter, parsed the same way) and SPOOL_METRICS_KEYS
refuse a plain key under MIN_KEY_LENGTH, saying the minimum and how to make one;
a sha256: entry is a digest, not the key, and is exempt.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from chalicelib.api.auth import MAKE_KEY, MIN_KEY_LENGTH, Keyring, hashed_entry, operator_keys
from tests.procs import guarded_env

SPOOL = Path(sys.executable).with_name("spool")
SHORT = "k" * (MIN_KEY_LENGTH - 1)
LONG_ENOUGH = "k" * MIN_KEY_LENGTH


def test_the_minimum_is_16() -> None:
    assert MIN_KEY_LENGTH == 16


@pytest.mark.parametrize("spec", [f"{SHORT}=acme", f"{LONG_ENOUGH}=a,x=b", "dev-key=demo"])
def test_a_short_tenant_key_is_refused_with_the_minimum_and_how_to_make_one(spec: str) -> None:
    with pytest.raises(ValueError) as refused:
        Keyring.parse(spec)
    message = str(refused.value)
    assert "SPOOL_API_KEYS" in message and f"shorter than {MIN_KEY_LENGTH} characters" in message
    assert MAKE_KEY in message and "secrets.token_urlsafe(32)" in message
    assert "dev-key" not in message and SHORT not in message  # the key is never said


def test_a_short_operator_key_is_refused_bare_or_named() -> None:
    for spec in (SHORT, f"{SHORT}=prometheus"):
        with pytest.raises(ValueError, match="SPOOL_METRICS_KEYS"):
            operator_keys(spec)


def test_keys_of_the_minimum_length_and_digests_of_short_keys_pass() -> None:
    assert Keyring.parse(f"{LONG_ENOUGH}=acme").match(LONG_ENOUGH) == "acme"
    # A digest is exempt: it is 64 hex digits whatever the key was (the operator chose).
    assert Keyring.parse(hashed_entry("short", "acme")).match("short") == "acme"
    assert operator_keys(LONG_ENOUGH).match(LONG_ENOUGH) == "operator"


def test_the_made_key_passes() -> None:
    made = subprocess.run(
        [sys.executable, "-c", "import secrets; print(secrets.token_urlsafe(32))"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    assert Keyring.parse(f"{made}=acme").match(made) == "acme"


@pytest.mark.parametrize("name", ["SPOOL_API_KEYS", "SPOOL_METRICS_KEYS"])
def test_spool_serve_refuses_to_start_on_a_short_key(tmp_path: Path, name: str) -> None:
    env = {"SPOOL_API_KEYS": f"{LONG_ENOUGH}=acme", name: f"{SHORT}=acme"}
    ran = subprocess.run(
        [str(SPOOL), "serve", "--port", "0"],
        cwd=tmp_path,
        env=guarded_env(SPOOL_STORE_URL=f"sqlite:///{tmp_path}/spool.db", **env),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert ran.returncode == 2, ran.stderr
    [line] = ran.stderr.splitlines()
    assert name in line and "secrets.token_urlsafe(32)" in line and SHORT not in line, line
    assert not (tmp_path / "spool.db").exists()

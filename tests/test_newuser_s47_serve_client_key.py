"""`spool serve` given the client's SPOOL_API_KEY in the server's `key=tenant` form.

The README's Try it keeps a key across restarts with
`SPOOL_API_KEYS=dev-my-own-laptop-key=default make run`. A newcomer who wrote
SPOOL_API_KEY (the variable the same section's `export` line sets for the command
line and the client) was not warned: it is a setting, so the misspelling check let
it be, and `spool serve` made a new dev key as if none were given. Their own key
then got 401 with no word why. Now one line says which variable the server reads,
without the key in it; a plain key in SPOOL_API_KEY (the exported one, for `spool
enqueue` in the same shell) is the client's and changes nothing.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from chalicelib.config import Settings
from local import serve
from tests.procs import ROOT, guarded_env

KEY = "dev-my-own-laptop-key"


def test_serve_refuses_a_server_entry_in_the_client_s_variable(tmp_path: Path) -> None:
    env = guarded_env(
        SPOOL_API_KEY=f"{KEY}=default",
        SPOOL_STORE_URL=f"sqlite:///{tmp_path}/s.db",
        PYTHONPATH=str(ROOT),
    )
    env.pop("SPOOL_API_KEYS", None)
    try:
        ran = subprocess.run(
            [sys.executable, "-m", "local.cli", "serve", "--port", "0"],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=20,  # killed then: it served with a dev key of its own
        )
    except subprocess.TimeoutExpired as served:
        pytest.fail(f"spool serve started instead of refusing:\n{served.stdout!r}")
    assert ran.returncode == 2, ran.stderr
    [line] = ran.stderr.splitlines()
    assert "SPOOL_API_KEYS" in line and "SPOOL_API_KEY " in line
    assert KEY not in line  # a key is never echoed
    assert not (tmp_path / "s.db").exists()  # refused before the store was made


@pytest.mark.parametrize("key", [KEY, "dGVzdC1rZXktMDEyMzQ1Njc4OQ=="])
def test_a_client_key_beside_no_server_keys_is_left_alone(key: str) -> None:
    """The exported key (a base64 one may end in `=`) is for the command line."""
    serve.check_keys_before_opening(Settings(extra={"SPOOL_API_KEY": key}))


def test_the_client_s_variable_beside_the_server_s_keys_is_left_alone() -> None:
    settings = Settings(api_keys=f"{KEY}=default", extra={"SPOOL_API_KEY": f"{KEY}=default"})
    serve.check_keys_before_opening(settings)

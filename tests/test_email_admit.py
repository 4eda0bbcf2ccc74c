"""send_email jobs no settings could ever send are refused at enqueue, as http_request's
are: before, `spool enqueue send_email` without a `from` and without SPOOL_SMTP_FROM said
`created`, and the worker made the job dead on its first attempt ("no sender"); a `from`
outside the allowed senders did the same. The API reads the worker's settings (docs/
handlers.md, "http_request"), so what the settings refuse is known when the job arrives.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.procs import guarded_env

SPOOL = Path(sys.executable).with_name("spool")
BODY = '"to": "a@example.org", "subject": "s", "text": "t"'


def enqueue(folder: Path, payload: str, **env: str) -> subprocess.CompletedProcess[str]:
    child = guarded_env(SPOOL_STORE_URL="sqlite:///spool.db", **env)
    for name in ("SPOOL_SMTP_FROM", "SPOOL_SMTP_ALLOWED_FROM"):
        if name not in env:
            child.pop(name, None)
    return subprocess.run(
        [str(SPOOL), "enqueue", "send_email", "--payload", "{" + payload + "}"],
        cwd=folder, env=child, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("payload", "env", "said"),
    [
        (BODY, {}, "no sender: give `from` in the payload or set SPOOL_SMTP_FROM"),
        (
            BODY + ', "from": "ceo@bank.test"',
            {"SPOOL_SMTP_FROM": "noreply@example.com"},
            "sender 'ceo@bank.test' is not at the domain of SPOOL_SMTP_FROM (@example.com)",
        ),
        (
            BODY + ', "from": "ceo@bank.test"',
            {"SPOOL_SMTP_ALLOWED_FROM": "@example.com"},
            "sender 'ceo@bank.test' is not in SPOOL_SMTP_ALLOWED_FROM",
        ),
    ],
)
def test_a_job_the_settings_could_never_send_is_refused_and_not_stored(
    tmp_path: Path, payload: str, env: dict[str, str], said: str
) -> None:
    result = enqueue(tmp_path, payload, **env)
    assert result.returncode == 2, result.stderr
    assert said in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "spool.db").exists()  # nothing stored, no store made


@pytest.mark.parametrize(
    ("payload", "env"),
    [
        (BODY, {"SPOOL_SMTP_FROM": "noreply@example.com"}),
        (BODY + ', "from": "team@example.com"', {"SPOOL_SMTP_FROM": "noreply@example.com"}),
        (BODY + ', "from": "anyone@else.test"', {}),
        (BODY + ', "from": "ceo@bank.test"', {"SPOOL_SMTP_ALLOWED_FROM": "*"}),
    ],
)
def test_a_job_the_settings_can_send_is_stored(
    tmp_path: Path, payload: str, env: dict[str, str]
) -> None:
    result = enqueue(tmp_path, payload, **env)
    assert result.returncode == 0, result.stderr
    assert "queued  created" in result.stdout

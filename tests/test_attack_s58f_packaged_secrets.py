"""`make package` refuses a secret written in plain text into a stage's environment.

`chalice package` copies .chalice/config.json's environment variables, as they are,
into every function's `Environment` in out/sam.json: the template an operator uploads
to an artifact bucket, and the functions' configuration, which anyone allowed
`lambda:GetFunctionConfiguration` or the console reads. Reproduced (helper F, s58): a
prod stage with `SPOOL_API_KEYS` (a tenant's bearer key) and run_jobs with
`SPOOL_SMTP_PASSWORD` passed `make package`'s check step (`python -m
chalicelib.handler_check`, exit 0), and `chalice package --merge-template
infra/resources.json` wrote the key into all three functions' environment and the
password into the worker's. The plain setting also wins over the SSM parameter the
stack reads, so the SecureString the docs prescribe (docs/aws.md, API keys) was
silently bypassed.

The check step now refuses, naming the setting and the safe form (the stack parameter
holding an SSM SecureString, or sha256: digests for key lists), never the value.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from chalicelib import handler_check
from chalicelib.config import ConfigError
from tests.procs import guarded_env

ROOT = Path(__file__).resolve().parent.parent
KEY = "acme-key-0123456789abcdef"
DIGEST = "sha256:" + "ab" * 32
PASSWORD = "hunter2-smtp-pass"
SIGNING = "whsec_0123456789abcdefghij"


def _check(tmp_path: Path, stage_env: dict[str, str], worker_env: dict[str, str]) -> str:
    """`make package`'s first step on a prod stage; its stderr (exit code asserted)."""
    config = {
        "stages": {
            "prod": {
                "environment_variables": stage_env,
                "lambda_functions": {
                    "run_jobs": {"lambda_timeout": 240, "environment_variables": worker_env},
                },
            }
        }
    }
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    check = ["-m", "chalicelib.handler_check", "--stage", "prod", "--config", str(path)]
    done = subprocess.run(
        [sys.executable, *check],
        cwd=tmp_path, env=guarded_env(PYTHONPATH=str(ROOT)),
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    return f"{done.returncode}:{done.stderr}"


def test_make_package_refuses_plain_api_keys_and_an_smtp_password(tmp_path: Path) -> None:
    out = _check(tmp_path, {"SPOOL_API_KEYS": f"{KEY}=acme"}, {"SPOOL_SMTP_PASSWORD": PASSWORD})
    assert out.startswith("1:handler_check (prod): "), out
    assert "SPOOL_API_KEYS" in out and "ApiKeysParameter" in out, out
    assert "SPOOL_SMTP_PASSWORD" in out and "SmtpPasswordParameter" in out, out
    assert KEY not in out and PASSWORD not in out  # named, never shown


def test_the_safe_forms_pass(tmp_path: Path) -> None:
    """Digests and parameter names are no secrets: the stage packages as before."""
    safe = {
        "SPOOL_API_KEYS": f"{DIGEST}=acme",
        "SPOOL_METRICS_KEYS": DIGEST,
        "SPOOL_WEBHOOKS_PARAMETER": "/spool/prod/webhooks",
    }
    worker = {"SPOOL_SMTP_PASSWORD_PARAMETER": "/spool/prod/smtp-password"}
    assert _check(tmp_path, safe, worker) == "0:"


@pytest.mark.parametrize(
    ("name", "value", "fix"),
    [
        ("SPOOL_API_KEYS", f"{DIGEST}=acme,{KEY}=globex", "ApiKeysParameter"),
        ("SPOOL_METRICS_KEYS", f"{KEY}=prometheus", "sha256:"),
        ("SPOOL_SMTP_PASSWORD", PASSWORD, "SmtpPasswordParameter"),
        ("SPOOL_WEBHOOKS", json.dumps({"acme": {"secrets": [SIGNING]}}), "WebhooksParameter"),
    ],
)
def test_each_secret_setting_with_a_safe_form_is_refused(name: str, value: str, fix: str) -> None:
    """One plain entry among digests is enough: the template would carry it."""
    with pytest.raises(ConfigError) as caught:
        handler_check.check_secrets({name: value})
    message = str(caught.value)
    assert name in message and fix in message, message
    assert KEY not in message and PASSWORD not in message and SIGNING not in message


def test_a_secret_with_no_safe_form_is_named_and_packaging_goes_on(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A store URL's password has no parameter to move to: a warning, not a refusal."""
    handler_check.check_secrets({"SPOOL_STORE_URL": "postgresql://spool:pw-12345@db/spool"})
    err = capsys.readouterr().err
    assert "SPOOL_STORE_URL" in err and "pw-12345" not in err, err


def test_a_handler_s_listed_secret_is_named_and_nothing_else_is(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """SPOOL_SECRET_VARIABLES names the handlers' own secrets; a variable whose value
    merely contains a short secret's text is not named with them."""
    env = {
        "SPOOL_SECRET_VARIABLES": "PARTNER_API_KEY",
        "PARTNER_API_KEY": "pk",
        "SPOOL_SQS_QUEUE": "spool-prod-jobs-pk",
        "SPOOL_API_KEYS": f"{DIGEST}=acme",
    }
    handler_check.check_secrets(env)
    err = capsys.readouterr().err
    assert err.startswith("handler_check: warning: PARTNER_API_KEY holds a secret"), err


def test_the_repository_s_own_stages_hold_no_secret(capsys: pytest.CaptureFixture[str]) -> None:
    config = json.loads((ROOT / ".chalice" / "config.json").read_text())
    for stage in config["stages"]:
        handler_check.check_secrets(handler_check.deployed_variables(config, stage))
    assert capsys.readouterr().err == ""

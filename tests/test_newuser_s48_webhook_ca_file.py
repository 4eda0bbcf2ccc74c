"""SPOOL_WEBHOOK_CA_FILE is checked at start, and named when it fails, as the other
CA files are.

Found walking docs/webhooks.md ("The other SPOOL_WEBHOOK_* settings ... are checked
then too"): SPOOL_HTTP_CA_FILE and SPOOL_SMTP_CA_FILE naming no file stop `spool
worker` in one line, but SPOOL_WEBHOOK_CA_FILE=/nonexistent started it without a
word; then every https delivery failed with "SPOOL_HTTP_CA_FILE cannot be loaded",
naming a setting the operator had not set (webhooks share http_request's client).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from chalicelib.clock import FakeClock
from chalicelib.config import ConfigError, Settings
from chalicelib.models import Completion, JobState
from chalicelib.storage.memory import MemoryStore
from chalicelib.webhooks import config, signing
from chalicelib.webhooks.deliver import Deliverer
from local import cli
from tests.factories import new_job, token
from tests.webhook_receiver import Receiver

HOOKS = json.dumps({"acme": {"secrets": [signing.new_secret()]}})


def hook_settings(ca_file: str) -> Settings:
    return Settings(
        extra={
            "SPOOL_WEBHOOKS": HOOKS,
            "SPOOL_WEBHOOK_ALLOW_PRIVATE": "true",
            "SPOOL_WEBHOOK_CA_FILE": ca_file,
        }
    )


def test_a_missing_webhook_ca_file_is_refused_naming_its_setting(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as refused:
        config.from_settings(hook_settings(str(tmp_path / "nope.pem")))
    assert str(refused.value).startswith("SPOOL_WEBHOOK_CA_FILE: ")
    assert "is not a file" in str(refused.value)


def test_spool_worker_stops_on_a_missing_webhook_ca_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SPOOL_STORE_URL", f"sqlite:///{tmp_path / 'spool.db'}")
    monkeypatch.setenv("SPOOL_WEBHOOKS", HOOKS)
    monkeypatch.setenv("SPOOL_WEBHOOK_CA_FILE", str(tmp_path / "nope.pem"))
    line = worker_refusal(monkeypatch, capsys)
    assert line.startswith("spool: SPOOL_WEBHOOK_CA_FILE: "), line


def worker_refusal(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> str:
    """`spool worker --burst` on the local store as the environment sets it: the one
    line it stops with, exit 2 (a setting it refuses)."""
    for name in ("SPOOL_URL", "SPOOL_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    code = cli.main(["worker", "--burst", "--quiet"])
    err = capsys.readouterr().err
    assert code == 2, err
    [line] = err.splitlines()
    return line


def test_a_ca_file_that_does_not_load_is_named_in_the_delivery_error(
    tmp_path: Path, receiver: Receiver
) -> None:
    """A file that exists but holds no certificate passes the start check; the delivery's
    error names the setting it came from, not http_request's."""
    bad = tmp_path / "ca.pem"
    bad.write_text("not a certificate\n", encoding="utf-8")
    clock = FakeClock()
    store = MemoryStore(clock)
    url = receiver.url.replace("http://", "https://", 1)
    job = store.add([new_job(clock, tenant="acme", callback_url=url)])[0].job
    [running] = store.claim(1, 30)
    store.finish([Completion(job.id, token(running), JobState.SUCCEEDED, result=None)])
    assert Deliverer(store, hook_settings(str(bad))).drain() == 1
    [delivery] = store.webhooks(job.id)
    assert delivery.last_error is not None
    assert "SPOOL_WEBHOOK_CA_FILE cannot be loaded" in delivery.last_error, delivery.last_error
    assert "SPOOL_HTTP_CA_FILE" not in delivery.last_error

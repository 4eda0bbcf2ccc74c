"""SPOOL_SECRET_VARIABLES names secrets; the names themselves are no secret.

docs/handlers.md has a newcomer write `SPOOL_SECRET_VARIABLES=PARTNER_TOKEN` so that
the token's value is masked. The setting's own name holds SECRET, so its value, the
variable's name, was masked too, everywhere: the handler of a worker whose shell
lacked PARTNER_TOKEN died with `KeyError: '***'`, hiding the very variable to export.
The values the setting names are still masked; the names it holds are not.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterator

import pytest

from chalicelib import logs
from chalicelib.clock import FakeClock
from chalicelib.config import Settings
from chalicelib.handlers import Registry
from chalicelib.log_redact import secrets_in
from chalicelib.models import JobState
from chalicelib.storage.memory import MemoryStore
from chalicelib.worker import Worker, WorkerConfig
from tests.factories import new_job

TOKEN = "tok-partner-Secret-4711"


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    buf = io.StringIO()
    yield buf
    logs.reset()


@pytest.mark.parametrize("names", ["PARTNER_TOKEN", "PARTNER_TOKEN,BILLING_TOKEN"])
def test_the_names_are_not_among_the_secrets_their_values_are(
    names: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PARTNER_TOKEN", TOKEN)
    found = secrets_in(Settings(extra={"SPOOL_SECRET_VARIABLES": names}))
    assert found == {TOKEN}


def test_a_missing_variable_is_named_in_the_job_s_error(
    captured: io.StringIO, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = {"SPOOL_SECRET_VARIABLES": "PARTNER_TOKEN"}
    monkeypatch.delenv("PARTNER_TOKEN", raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    logs.configure(Settings.from_env(env), stream=captured, force=True)
    clock = FakeClock()
    store = MemoryStore(clock)
    reg = Registry()

    @reg.handler("partner_call", max_attempts=1)
    def partner_call(payload: dict[str, str]) -> None:
        os.environ["PARTNER_TOKEN"]  # the worker's shell lacks it

    job = store.add([new_job(clock, "partner_call", max_attempts=1)])[0].job
    worker = Worker(store, reg, WorkerConfig(concurrency=1))
    try:
        worker.drain()
    finally:
        worker.close()
    done = store.get(job.id)
    assert done is not None and done.state is JobState.DEAD
    assert done.last_error == "KeyError: 'PARTNER_TOKEN'"

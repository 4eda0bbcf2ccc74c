"""The demo handlers (echo, sleep, fail) exist only where a setting turns them on.

Off by default and in the deployed stages; on in the `local` stage, in
`spool serve`'s laptop mode, `make run` and tests. Handlers register into one
process-wide registry, so these tests first make sure the demo module is
loaded in this process, then check a runtime without the setting still does
not offer them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from chalice.cli.factory import CLIFactory
from chalice.test import Client

import app as spool_app
from chalicelib.config import Settings
from chalicelib.handlers import registry
from chalicelib.runtime import DEMO_HANDLER_MODULE, Runtime, build_runtime
from tests.apikit import Api, installed, settings_for

ROOT = Path(__file__).resolve().parent.parent
DEMO = {"echo", "sleep", "fail"}


@pytest.fixture
def plain(tmp_path: Path) -> Iterator[Api]:
    """app.py on a runtime built without the setting, in a process where the demo
    module is loaded."""
    registry.load((DEMO_HANDLER_MODULE,))
    assert set(registry.types()) >= DEMO
    with (
        installed(settings_for(tmp_path, demo_handlers=False)),
        Client(spool_app.app, stage_name="local") as client,
    ):
        yield Api(client)


def test_the_setting_is_off_unless_turned_on() -> None:
    assert Settings().demo_handlers is False
    assert Settings.from_env({}).demo_handlers is False
    assert Settings.from_env({"SPOOL_DEMO_HANDLERS": "true"}).demo_handlers is True
    assert Settings.from_env({"SPOOL_DEMO_HANDLERS": "0"}).demo_handlers is False


def test_a_runtime_without_the_setting_does_not_offer_them(plain: Api) -> None:
    variants = plain.get("/openapi.json").json["components"]["schemas"]["EnqueueJob"]["oneOf"]
    text = json.dumps(variants)
    for name in DEMO:
        assert not re.search(rf'"enum": \["{name}"\]|"const": "{name}"', text), name
    for name in DEMO:
        refused = plain.post("/enqueue", {"type": name})
        assert refused.status == 422 and refused.error_code == "unknown_job_type", name
        assert name not in refused.json["error"]["details"]["known"]


def test_a_runtime_with_the_setting_offers_them(tmp_path: Path) -> None:
    with (
        installed(settings_for(tmp_path, demo_handlers=True)),
        Client(spool_app.app, stage_name="local") as client,
    ):
        assert Api(client).post("/enqueue", {"type": "echo"}).status == 201


def test_its_worker_does_not_run_them_either(tmp_path: Path) -> None:
    """A demo job left in the store (enqueued where they were on) is not run by a
    runtime without them: its worker treats the type as unknown."""
    from chalicelib.models import JobState
    from chalicelib.service import EnqueueRequest

    with_demo = build_runtime(settings_for(tmp_path, demo_handlers=True))
    try:
        [added] = with_demo.service.enqueue([EnqueueRequest(type="echo")], "tenant-a")
    finally:
        with_demo.close()
    rt: Runtime = build_runtime(settings_for(tmp_path, demo_handlers=False))
    try:
        assert DEMO.isdisjoint(rt.registry.types())
        with pytest.raises(Exception, match="unknown job type 'sleep'"):
            rt.registry.get("sleep")
        worker = rt.worker(1)
        worker.run(burst=True)
        worker.close()
        job = rt.store.get(added.job.id)
        assert job is not None and job.state is not JobState.SUCCEEDED
        assert "echo" in (job.last_error or "")
    finally:
        rt.close()


def test_demo_listed_in_spool_handlers_counts_as_asked_for(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, demo_handlers=False, handlers=(DEMO_HANDLER_MODULE,))
    rt = build_runtime(settings)
    try:
        assert set(rt.registry.types()) >= DEMO
    finally:
        rt.close()


@pytest.mark.parametrize(("stage", "on"), [("local", True), ("dev", False), ("prod", False)])
def test_only_the_local_stage_turns_them_on(stage: str, on: bool) -> None:
    config = CLIFactory(str(ROOT)).create_config_obj(chalice_stage_name=stage)
    assert Settings.from_env(config.environment_variables).demo_handlers is on

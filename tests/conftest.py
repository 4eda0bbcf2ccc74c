"""Shared fixtures. The AWS guard runs before anything imports boto3, so no test
ever reaches for the metadata address or real AWS."""

from __future__ import annotations

import os

# Set at import time (not only in a fixture) so even collection-time imports are safe.
os.environ["AWS_EC2_METADATA_DISABLED"] = "true"
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
os.environ["AWS_ACCESS_KEY_ID"] = "testing"
os.environ["AWS_SECRET_ACCESS_KEY"] = "testing"
os.environ.pop("AWS_PROFILE", None)
os.environ.pop("AWS_SESSION_TOKEN", None)

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

from chalicelib.clock import FakeClock
from chalicelib.handlers import Registry, registry
from chalicelib.runtime import BUILTIN_HANDLER_MODULES
from tests.backends import BACKENDS, open_backend

if TYPE_CHECKING:
    from chalicelib.runtime import Runtime
    from tests.apikit import Api


@pytest.fixture(autouse=True)
def aws_guard(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_DEFAULT_REGION", os.environ.get("AWS_DEFAULT_REGION", "us-east-1"))
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def handlers() -> Registry:
    registry.load(BUILTIN_HANDLER_MODULES)
    return registry


@pytest.fixture(params=BACKENDS)
def store(request: pytest.FixtureRequest, clock: FakeClock, tmp_path) -> Iterator[object]:
    """Every backend, each fresh and empty, all on the test clock."""
    with open_backend(request.param, clock, tmp_path, request) as opened:
        yield opened


@pytest.fixture
def rt(tmp_path) -> Iterator[Runtime]:
    """The process-wide runtime app.py uses, on a real SQLite file (override for settings)."""
    from tests.apikit import installed, settings_for

    with installed(settings_for(tmp_path)) as runtime:
        yield runtime


@pytest.fixture
def api(rt: Runtime) -> Iterator[Api]:
    """JSON requests to app.py through chalice's test client, against `rt`."""
    from chalice.test import Client

    import app as spool_app
    from tests.apikit import Api

    with Client(spool_app.app, stage_name="local") as client:
        yield Api(client)

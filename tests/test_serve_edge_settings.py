"""`spool serve` refuses every setting `chalice local` refuses, with one check.

`spool serve` had a check of its own (keys, metrics keys, queue labels) beside
chalicelib/edge_settings.check_edge (what `chalice local` runs), which also covers
limits, the result cache, waits and webhooks. serve refused those too, but only by
the later build of app.py's edge or by the CLI's limit check, the latter without
the fix to make. Now serve's check is check_edge, worded as serve words it:
"NAME: reason" and "Fix the variable and start again".
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from chalicelib.config import Settings
from chalicelib.edge_settings import FIX
from chalicelib.runtime import build_runtime
from local.cli_errors import UsageError
from local.serve import check_edge_settings
from tests.apikit import API_KEYS
from tests.procs import guarded_env

SPOOL = Path(sys.executable).with_name("spool")

# Each a setting app.py's edge refuses: the one named in the message.
EDGE_REFUSALS = [
    ("SPOOL_API_KEYS", "no-tenant-here"),
    ("SPOOL_METRICS_KEYS", "k=bad name"),
    ("SPOOL_METRICS_MAX_QUEUES", "-3"),
    ("SPOOL_CACHE_BYTES", "lots"),
    ("SPOOL_CACHE_RECHECK", "999"),
    ("SPOOL_HEALTH_CACHE_SECONDS", "999"),
    ("SPOOL_MAX_WAITS_PER_TENANT", "0"),
    ("SPOOL_MAX_WAITS", "0"),
    ("SPOOL_LIMITS", "{oops"),
    ("SPOOL_TENANT_WEIGHTS", '{"a": 0}'),
    ("SPOOL_TENANT_LIMITS", "[1]"),
    ("SPOOL_AUTH_FAILURES", "often"),
    ("SPOOL_WEBHOOKS", "{oops"),
]


@pytest.mark.parametrize(
    ("name", "value"), EDGE_REFUSALS, ids=[name for name, _ in EDGE_REFUSALS]
)  # fmt: skip
def test_serve_s_check_refuses_what_the_edge_would(name: str, value: str) -> None:
    """Before, check_edge_settings checked only keys, metrics keys and queue labels."""
    settings = Settings(store_url="memory://", api_keys=API_KEYS, extra={name: value})
    if name == "SPOOL_API_KEYS":
        settings = Settings(store_url="memory://", api_keys=value)
    rt = build_runtime(settings)
    try:
        with pytest.raises(UsageError) as refused:
            check_edge_settings(rt)
    finally:
        rt.close()
    assert name in refused.value.problem
    assert refused.value.fix == FIX == "Fix the variable and start again"
    assert "\n" not in refused.value.problem


def test_good_edge_settings_pass_serve_s_check() -> None:
    rt = build_runtime(Settings(store_url="memory://", api_keys=API_KEYS))
    try:
        check_edge_settings(rt)
    finally:
        rt.close()


@pytest.mark.parametrize(
    ("name", "value"),
    [("SPOOL_LIMITS", '{"resize": {"concurrency": 2}}'), ("SPOOL_TENANT_WEIGHTS", '{"a": 0}')],
    ids=["limits", "weights"],
)
def test_serve_names_the_limit_setting_and_the_fix(tmp_path: Path, name: str, value: str) -> None:
    """Refused by the CLI's own limit check, serve said what was wrong but not what to
    do (no fix); now the line ends as every other edge setting's does."""
    ran = subprocess.run(
        [str(SPOOL), "serve", "--port", "0"],
        cwd=tmp_path,
        env=guarded_env(
            SPOOL_STORE_URL=f"sqlite:///{tmp_path}/spool.db",
            SPOOL_API_KEYS=API_KEYS,
            **{name: value},
        ),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert ran.returncode == 2, ran.stderr
    [line] = ran.stderr.splitlines()
    assert line.startswith(f"spool: {name}") and line.endswith(f"{FIX}."), line


class _NoServer:
    """Stands for local.server.Server: binds nothing, serves nothing, returns at once."""

    host, port, last_turn = "127.0.0.1", 1, 0.0

    def __init__(self, *args: object, **kwargs: object) -> None:
        pass

    def serve(self) -> None:
        pass

    def stop(self, *args: object, **kwargs: object) -> None:
        pass


def test_serve_builds_app_py_s_edge_once_and_serves_that_one(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Before, `spool serve` built the edge (keyring, result cache, limits) in its
    start-up check and again for app.py's routes: twice the work, and two caches of
    which the check's was thrown away. Now the check's edge is the one served."""
    from chalicelib import runtime as runtime_module
    from chalicelib.api import routes
    from local import cli, serve

    built: list[routes.Edge] = []

    class Counted(routes.Edge):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            built.append(self)

    monkeypatch.setattr(routes, "Edge", Counted)
    monkeypatch.setattr("local.server.Server", _NoServer)
    served: list[routes.Edge] = []
    monkeypatch.setattr(
        serve, "serve_beside_signals", lambda server: served.append(routes.current())
    )
    args = cli.build_parser().parse_args(["serve", "--port", "0", "--no-worker"])
    rt = build_runtime(Settings(store_url="memory://", api_keys=API_KEYS))
    try:
        assert serve._serve(rt, args) == 0
    finally:
        runtime_module.reset(None)
        rt.close()
    assert len(built) == 1
    assert served == built

"""A test that leaves process-wide state behind fails, by name, and later tests in
its pytest process do not meet what it left (tests/isolation.py, conftest.py's
`process_state_restored`).

Seen under `pytest -n 3`: with tests/limit_handlers.py's `limits.slow` (concurrency
2) in the process-wide handler registry, three tests that share no file failed
together on one xdist worker: the check that the built-ins declare no limits saw
it, and every in-process runtime claimed under its limit, so the throttled-claim
test's DynamoDB UpdateItem never came and the deadline check read four batches
where it reads two. Which tests failed depended on which files shared a worker.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from chalicelib.handlers import Registry, registry
from chalicelib.runtime import BUILTIN_HANDLERS
from tests import isolation
from tests.limit_log import LIMITED_TYPE
from tests.procs import ROOT, guarded_env

# The three tests that failed after the leak, and the file that leaks on purpose.
VICTIMS = (
    "tests/test_limits_worker.py::test_the_built_in_handlers_declare_no_limits",
    "tests/test_aws_events.py::test_a_batch_whose_claim_is_throttled_part_way_runs_every_job_once",
    "tests/test_events_deadline_redundant.py"
    "::test_the_deadline_check_reads_no_payload_or_result_from_s3",
)
LEAKY = "tests/leaky_s51c.py"


def test_a_handler_module_loaded_by_a_test_is_taken_off_and_named() -> None:
    before = isolation.snapshot(registry)
    registry.load(["tests.limit_handlers"])
    assert LIMITED_TYPE in registry.types()

    left = isolation.restore(registry, before)

    assert left == [
        "handler 'limits.slow' (registered by tests.limit_handlers)",
        "handler module 'tests.limit_handlers' marked loaded",
    ]
    assert LIMITED_TYPE not in registry.types() and registry.limits() == ()
    # Forgotten with its handler: importing it again registers it again, not nothing.
    assert "tests.limit_handlers" not in sys.modules
    registry.load(["tests.limit_handlers"])
    assert LIMITED_TYPE in registry.types()
    assert isolation.restore(registry, before) and LIMITED_TYPE not in registry.types()


def test_a_handler_taken_out_or_replaced_is_put_back(handlers: Registry) -> None:
    before = isolation.snapshot(registry)
    echo = registry.get("echo")
    del registry._specs["echo"]
    registry._specs["fail"] = echo

    left = isolation.restore(registry, before)

    assert left == [
        "handler 'echo' taken out of the registry",
        "handler 'fail' (registered by chalicelib.builtin.demo)",
    ]
    assert registry.get("echo") is echo and registry.get("fail") is before.specs["fail"]


def test_built_in_handlers_loaded_on_first_use_are_not_a_leak() -> None:
    registry.defer(BUILTIN_HANDLERS)  # as every runtime does
    before = isolation.snapshot(registry)
    registry.get("send_email")  # imports its deferred module: the registry's own doing
    assert isolation.restore(registry, before) == []
    assert "send_email" in registry.types()


def test_environment_variables_set_changed_or_unset_are_put_back_and_named_not_shown(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SPOOL_S51C_CHANGED", "before")
    monkeypatch.setenv("SPOOL_S51C_UNSET", "before")
    before = dict(os.environ)
    os.environ["SPOOL_S51C_SET"] = "secret-value"
    os.environ["SPOOL_S51C_CHANGED"] = "secret-value"
    del os.environ["SPOOL_S51C_UNSET"]

    left = isolation.environ_changes(before)

    assert left == [
        "environment variable SPOOL_S51C_CHANGED changed",
        "environment variable SPOOL_S51C_SET set",
        "environment variable SPOOL_S51C_UNSET unset",
    ]
    assert dict(os.environ) == before


def test_the_tests_that_leak_fail_by_name_and_the_ones_after_them_pass(tmp_path: Path) -> None:
    """End to end, in a pytest of its own: the leaking tests first, then the three that
    failed after them, in one process as one xdist worker runs them."""
    options = ["-p", "no:cacheprovider", "-p", "no:xdist", "-q", "-o", "addopts="]
    command = [sys.executable, "-m", "pytest", *options, "--basetemp", str(tmp_path / "run")]
    ran = subprocess.run(
        [*command, LEAKY, *VICTIMS],
        cwd=ROOT,
        env=guarded_env(),
        capture_output=True,
        text=True,
        timeout=240,
    )
    out = ran.stdout
    # The leaking two run to the end and fail at teardown; the three after them pass.
    assert "FAILED" not in out and "5 passed, 2 errors" in out, out[-4000:]
    for leaked, what in [
        ("test_loads_a_handler_module_into_the_process_wide_registry", "handler 'limits.slow'"),
        ("test_sets_an_environment_variable_without_monkeypatch", "SPOOL_S51C_LEAKED set"),
    ]:
        assert f"{LEAKY}::{leaked} left process-wide state behind" in out and what in out, out

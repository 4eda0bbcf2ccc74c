"""Tests that leave process-wide state behind on purpose, run only by
tests/test_chaos_s51c_leaked_state.py (in a pytest of its own, named on its command
line: the name does not match test_*.py, so the suite never collects this file).

Each does what a careless test did: a handler module loaded into the process-wide
registry (tests/limit_handlers.py's `limits.slow`, with a concurrency limit, which
made every later in-process runtime claim under a limit), and an environment
variable set without monkeypatch.
"""

from __future__ import annotations

import os

from chalicelib.handlers import registry
from tests.limit_log import LIMITED_TYPE

LEAKED_ENV = "SPOOL_S51C_LEAKED"


def test_loads_a_handler_module_into_the_process_wide_registry() -> None:
    registry.load(["tests.limit_handlers"])
    assert LIMITED_TYPE in registry.types()


def test_sets_an_environment_variable_without_monkeypatch() -> None:
    os.environ[LEAKED_ENV] = "1"

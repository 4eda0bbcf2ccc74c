"""The property tests' settings (tests/conftest.py): no deadline anywhere, and under CI
the same draws every run."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from hypothesis import settings

ROOT = Path(__file__).resolve().parent.parent


def test_property_tests_hold_no_deadline() -> None:
    assert settings.default is not None
    assert settings.default.deadline is None


def test_the_ci_profile_draws_the_same_examples_every_run() -> None:
    ci = settings.get_profile("ci")
    assert ci.derandomize is True
    assert ci.database is None
    assert ci.deadline is None


def test_ci_run_loads_the_ci_profile() -> None:
    assert "export SPOOL_HYPOTHESIS_PROFILE=ci" in (ROOT / ".ci" / "run").read_text()
    probe = "import tests.conftest, hypothesis; print(hypothesis.settings.default.derandomize)"
    env = {"SPOOL_HYPOTHESIS_PROFILE": "ci", "PATH": "/usr/bin:/bin"}
    out = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert out.stdout.strip() == "True", out.stderr

"""The suite's xdist groups hold with the pytest and pytest-xdist installed.

`make pytest` runs `--dist loadgroup` so that a module's tests sharing a built package
or a server run on one worker, and the "heavy" crash and model tests one at a time
(docs/testing.md). pytest 9.2 reads a test's id from a new attribute, and
pytest-xdist 3.8 still writes the group into the old one: every group was silently
ignored, each worker built the Lambda package for itself, and the heavy tests ran
side by side. Here a throwaway suite of grouped tests reports which worker ran each.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

GROUPED = """
import os
import pytest

@pytest.mark.xdist_group("together")
@pytest.mark.parametrize("n", range(6))
def test_grouped(n, tmp_path_factory):
    out = os.environ["SPOOL_GROUP_OUT"]
    with open(out, "a") as f:
        f.write(os.environ["PYTEST_XDIST_WORKER"] + "\\n")

@pytest.mark.parametrize("n", range(6))
def test_free(n):
    pass
"""


@pytest.mark.timeout(120)
def test_a_group_runs_on_one_worker(tmp_path: Path) -> None:
    suite = tmp_path / "suite"
    suite.mkdir()
    (suite / "test_grouped.py").write_text(GROUPED)
    out = tmp_path / "workers.txt"
    env = {**os.environ, "SPOOL_GROUP_OUT": str(out), "PYTHONDONTWRITEBYTECODE": "1"}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-n",
            "3",
            "--dist",
            "loadgroup",
            "-p",
            "no:cacheprovider",
            "--rootdir",
            str(suite),
            str(suite),
        ],
        cwd=suite,
        env=env,
        capture_output=True,
        text=True,
        timeout=100,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    workers = out.read_text().split()
    assert len(workers) == 6
    assert len(set(workers)) == 1, f"the group's tests ran on {sorted(set(workers))}"

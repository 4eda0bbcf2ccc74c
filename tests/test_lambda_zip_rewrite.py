"""`make package`'s rewrite of Chalice's zip: bytecode for the target, no dependency's tests.

A vendored package's own test suite (croniter/tests/, about 512 KB unzipped) shipped
in every deployment zip, compiled too. Checked on a small zip of the same layout, so
this runs without building the package.
"""

from __future__ import annotations

import sys
import zipfile
from pathlib import Path

from infra import lambda_zip


def test_the_rewrite_drops_dependencies_tests_and_keeps_the_app(tmp_path: Path) -> None:
    path = tmp_path / "deployment.zip"
    kept = [
        "app.py",
        "chalicelib/__init__.py",
        "chalicelib/tests_of_nothing.py",
        "croniter/__init__.py",
        "croniter/croniter.py",
        "pydantic/testing_helpers.py",
    ]
    dropped = ["croniter/tests/__init__.py", "croniter/tests/test_croniter.py", "x/test/a.py"]
    with zipfile.ZipFile(path, "w") as zf:
        for name in kept + dropped:
            zf.writestr(name, "VALUE = 1\n")
        zf.writestr("croniter/__pycache__/croniter.cpython-39.pyc", b"stale")

    added = lambda_zip.rewrite(path, compile_here=True)

    names = set(zipfile.ZipFile(path).namelist())
    assert set(kept) <= names
    assert not names & set(dropped)
    assert not any("/tests/" in n or n.startswith("x/test/") for n in names), names
    tag = sys.implementation.cache_tag
    assert f"croniter/__pycache__/croniter.{tag}.pyc" in names
    assert "croniter/__pycache__/croniter.cpython-39.pyc" not in names
    assert added == len(kept)

"""What `pip install .` ships: every Python package of the project, and the data files
its code opens. A package missing here imports fine from the checkout (and in the
editable install the tests use) but is absent from the image built by deploy/Dockerfile."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SHIPPED_TREES = ("chalicelib", "local", "spool_client")


def _config() -> dict[str, Any]:
    pyproject: dict[str, Any] = tomllib.loads((ROOT / "pyproject.toml").read_text())
    setuptools: dict[str, Any] = pyproject["tool"]["setuptools"]
    return setuptools


def test_every_package_in_the_tree_is_listed() -> None:
    found = {
        ".".join(init.parent.relative_to(ROOT).parts)
        for tree in SHIPPED_TREES
        for init in (ROOT / tree).rglob("__init__.py")
        if "__pycache__" not in init.parts
    }
    assert found - set(_config()["packages"]) == set()


def test_data_files_beside_the_code_are_declared() -> None:
    data = _config()["package-data"]
    for package, suffix in (("chalicelib.storage.migrations", ".sql"), ("chalicelib.ui", "")):
        directory = ROOT / package.replace(".", "/")
        files = [p for p in directory.rglob("*") if p.is_file() and "__pycache__" not in p.parts]
        files = [p for p in files if p.suffix != ".py" and p.name.endswith(suffix)]
        assert files, package
        assert package in data, package

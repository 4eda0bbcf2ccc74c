"""The self-hosting image's build stage copies every package pyproject.toml installs.

deploy/Dockerfile runs `pip install .` on what it COPYs; setuptools refuses to build
when a package listed in [tool.setuptools] packages has no directory, so a package
added to pyproject.toml but not to the Dockerfile breaks `docker build` (no test
runs docker here).
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "deploy" / "Dockerfile"


def _copied_top_levels() -> set[str]:
    """The first path part of every source the build stage COPYs from the context."""
    text = DOCKERFILE.read_text()
    build_stage = re.split(r"^FROM ", text, flags=re.M)[1]
    copied: set[str] = set()
    for sources in re.findall(r"^COPY (?!--from)(.+?) \S+$", build_stage, re.M):
        copied.update(Path(source).parts[0] for source in sources.split())
    return copied


def test_the_build_stage_copies_every_package_pyproject_installs() -> None:
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    needed = {package.split(".")[0] for package in setuptools["packages"]}
    needed |= {f"{module}.py" for module in setuptools.get("py-modules", [])}
    assert needed - _copied_top_levels() == set()

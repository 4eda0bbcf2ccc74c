"""spool-client's source distribution: built as a release would build it, from a copy of
the checkout where client/spool_client is still the link to ../spool_client, then
installed into a fresh virtual environment and imported there.

tests/test_client_package.py checks the wheel; nothing built the sdist, which is what
a user gets from `pip install spool-client` when no wheel fits, and what a
distribution packager starts from. Its files come through a symbolic link, so "the
sdist holds the package" is not a given: setuptools could as well have stored the
link, or nothing. Everything here is offline: `python -m build --no-isolation`
uses this environment's setuptools, and pip is told `--no-index`.
"""

from __future__ import annotations

import importlib.metadata
import json
import re
import shutil
import subprocess
import sys
import tarfile
import venv
from pathlib import Path

import pytest

from tests.procs import ROOT, guarded_env
from tests.test_client_package import httpx_alone

CLIENT_FILES = {p.name for p in (ROOT / "spool_client").iterdir() if p.suffix in {".py", ".typed"}}


def _run(args: list[str], cwd: Path) -> str:
    ran = subprocess.run(
        args, cwd=cwd, env=guarded_env(), capture_output=True, text=True, timeout=300
    )
    assert ran.returncode == 0, f"{args}: {ran.stdout}{ran.stderr}"
    return ran.stdout


@pytest.fixture(scope="module")
def sdist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`python -m build --sdist client/`, run in a copy of the checkout's client/ and
    spool_client/ (links kept as links), so nothing is written into the checkout."""
    repo = tmp_path_factory.mktemp("client-sdist") / "repo"
    repo.mkdir()
    shutil.copytree(ROOT / "client", repo / "client", symlinks=True)
    shutil.copytree(
        ROOT / "spool_client", repo / "spool_client", ignore=shutil.ignore_patterns("__pycache__")
    )
    assert (repo / "client" / "spool_client").is_symlink()  # as in the checkout
    out = repo.parent / "dist"
    _run([sys.executable, "-m", "build", "--sdist", "--no-isolation", "--outdir", str(out),
          "client"], cwd=repo)  # fmt: skip
    # spool-client-0.1.0 or spool_client-0.1.0 (PEP 625), as the setuptools at hand names it
    [found] = out.glob("spool[-_]client-*.tar.gz")
    return found


def _members(sdist: Path) -> dict[str, tarfile.TarInfo]:
    with tarfile.open(sdist) as archive:
        return {m.name: m for m in archive.getmembers()}


def test_the_sdist_holds_every_client_module_as_a_file(sdist: Path) -> None:
    version = importlib.metadata.version("spool")
    top = sdist.name.removesuffix(".tar.gz")
    assert top.replace("-", "_") == f"spool_client_{version}"  # the server's version
    members = _members(sdist)
    package = {
        name.removeprefix(f"{top}/spool_client/"): info
        for name, info in members.items()
        if name.startswith(f"{top}/spool_client/")
    }
    assert set(package) == CLIENT_FILES
    assert all(info.isfile() for info in package.values()), "a link, not the file, was stored"
    assert f"{top}/pyproject.toml" in members and f"{top}/README.md" in members
    # Nothing of the server came along through the link.
    assert not [n for n in members if re.search(r"/(chalicelib|local|app\.py)", n)]


def test_the_sdists_readme_links_nothing_it_does_not_ship(sdist: Path) -> None:
    """The README is the package's long description (PyPI's page for it): a relative
    link out of client/ (../docs/client.md) goes nowhere once it is shipped."""
    top = sdist.name.removesuffix(".tar.gz")
    with tarfile.open(sdist) as archive:
        handle = archive.extractfile(f"{top}/README.md")
        assert handle is not None
        readme = handle.read().decode("utf-8")
    targets = re.findall(r"\]\(\s*<?([^)\s>]+)>?\s*\)", readme)
    relative = [t for t in targets if not re.match(r"[a-z]+://|#", t)]
    assert relative == [], f"client/README.md links files the sdist lacks: {relative}"


def test_the_sdist_installs_into_a_fresh_venv_and_imports(sdist: Path, tmp_path: Path) -> None:
    """pip builds the sdist into a wheel and installs it, as `pip install` of an sdist
    does; the fresh environment has only httpx's own dependencies added (by a .pth
    file pointing at this environment's copies), so it imports without the server."""
    wheels = tmp_path / "wheels"
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
          "--no-index", "-w", str(wheels), str(sdist)], cwd=tmp_path)  # fmt: skip
    [wheel] = wheels.glob("spool_client-*.whl")
    fresh = tmp_path / "fresh"
    venv.create(fresh, with_pip=True)
    python = fresh / "bin" / "python"
    _run([str(python), "-m", "pip", "install", "--no-deps", "--no-index", str(wheel)],
         cwd=tmp_path)  # fmt: skip
    deps = httpx_alone(tmp_path / "deps")
    purelib = _run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                   cwd=tmp_path).strip()  # fmt: skip
    (Path(purelib) / "httpx_deps.pth").write_text(f"{deps}\n", encoding="utf-8")
    probe = (
        "import sys, spool_client, spool_client.aio, spool_client.webhooks\n"
        "from spool_client import AsyncClient, Client\n"
        "Client('http://127.0.0.1:9', 'k').close()\n"
        "print(spool_client.__file__)\n"
        "import json; print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))\n"
    )
    where, loaded = _run([str(python), "-c", probe], cwd=tmp_path).splitlines()
    assert where.startswith(purelib)  # the installed copy, not the checkout's
    assert not {"chalicelib", "local", "chalice", "pydantic", "boto3"} & set(json.loads(loaded))
    shown = _run([str(python), "-m", "pip", "show", "spool-client"], cwd=tmp_path)
    assert "Requires: httpx" in shown

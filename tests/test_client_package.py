"""The client's own distribution (client/pyproject.toml, spool-client): a program that
only calls a Spool server installs it without the server's dependencies.

`pip install .` brings Chalice, boto3, pydantic, waitress and the rest, which a web
app that only enqueues does not want. The wheel is built here offline, from a copy of
client/ (its link to spool_client/ followed), and checked three ways: what its
metadata requires, what its modules import (read from their source), and that it
imports in an interpreter that has the standard library, the wheel and httpx's own
dependencies on its path, and nothing else.
"""

from __future__ import annotations

import ast
import email.parser
import importlib.metadata
import json
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parent.parent
CLIENT = ROOT / "client"
# The imports the client's modules may make beyond the standard library.
ALLOWED = {"spool_client", "httpx"}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """spool-client's wheel, built offline from a copy of client/ (so nothing is
    written into the checkout: build/ and the egg-info land in the copy)."""
    work = tmp_path_factory.mktemp("client-wheel")
    source = work / "client"
    shutil.copytree(CLIENT, source, ignore=shutil.ignore_patterns("__pycache__", "build"))
    out = work / "dist"
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
         "--no-index", "-w", str(out), str(source)],
        capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert built.returncode == 0, built.stdout + built.stderr
    [found] = out.glob("spool_client-*.whl")
    return found


def _metadata(wheel: Path) -> email.message.Message:
    with zipfile.ZipFile(wheel) as archive:
        [name] = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
        return email.parser.Parser().parsestr(archive.read(name).decode())


def _server_dependencies() -> set[str]:
    """The main distribution's run-time requirements and extras, httpx aside."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    names = {Requirement(r).name.lower() for r in project["dependencies"]}
    for extra in project["optional-dependencies"].values():
        names |= {Requirement(r).name.lower() for r in extra if not r.startswith("spool[")}
    return names - {"httpx"}


def test_the_wheel_requires_httpx_and_no_server_dependency(wheel: Path) -> None:
    metadata = _metadata(wheel)
    requires = metadata.get_all("Requires-Dist") or []
    assert [Requirement(r).name.lower() for r in requires] == ["httpx"]
    assert {Requirement(r).name.lower() for r in requires} & _server_dependencies() == set()
    assert "chalice" in _server_dependencies()  # the check above compares with something
    assert metadata["Name"] == "spool-client"


def test_the_client_is_released_with_the_server_and_asks_for_the_same_httpx() -> None:
    client = tomllib.loads((CLIENT / "pyproject.toml").read_text())["project"]
    server = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert client["version"] == server["version"]
    assert client["requires-python"] == server["requires-python"]
    [httpx] = [r for r in server["dependencies"] if Requirement(r).name == "httpx"]
    assert client["dependencies"] == [httpx]


def test_the_wheel_holds_every_client_module_and_nothing_else(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        shipped = {n for n in archive.namelist() if ".dist-info/" not in n}
    expected = {
        f"spool_client/{p.name}" for p in (ROOT / "spool_client").iterdir() if p.is_file()
    } - {f"spool_client/{p.name}" for p in (ROOT / "spool_client").glob("*.pyc")}
    assert shipped == expected
    assert "spool_client/py.typed" in shipped  # its type hints reach a user's mypy


def _imports(source: str) -> set[str]:
    """The top-level names every import statement of a module names (any depth:
    a function's late import counts as much as the module's own)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found


def test_no_client_module_imports_anything_of_the_server(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        modules = {n: archive.read(n).decode() for n in archive.namelist() if n.endswith(".py")}
    assert len(modules) >= 8
    for name, source in modules.items():
        outside = _imports(source) - ALLOWED - set(sys.stdlib_module_names) - {"__future__"}
        assert outside == set(), f"{name} imports {sorted(outside)}"
    assert "spool_client/aio.py" in modules and "httpx" in _imports(modules["spool_client/aio.py"])


def _closure(distribution: str) -> set[str]:
    """The distribution and every one it requires (markers evaluated, extras left out)."""
    seen: set[str] = set()
    todo = [distribution]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        for text in importlib.metadata.requires(name) or []:
            requirement = Requirement(text)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                todo.append(requirement.name.lower())
    return seen


def _top_level(distribution: str) -> set[str]:
    files = importlib.metadata.distribution(distribution).files or []
    return {
        f.parts[0].removesuffix(".py")
        for f in files
        if not f.parts[0].endswith((".dist-info", ".data")) and f.parts[0] != ".."
        and (len(f.parts) > 1 or f.parts[0].endswith(".py"))
    }  # fmt: skip


def httpx_alone(deps: Path) -> Path:
    """A new folder DEPS holding links to httpx and what it requires, nothing else:
    put on a path, it is all the client may import beyond the standard library."""
    deps.mkdir()
    site = Path(str(importlib.metadata.distribution("httpx").locate_file("")))
    for distribution in _closure("httpx"):
        for top in _top_level(distribution):
            target = site / top if (site / top).exists() else site / f"{top}.py"
            (deps / target.name).symlink_to(target)
    return deps


def test_the_wheel_imports_with_httpx_alone_beside_the_standard_library(
    wheel: Path, tmp_path: Path
) -> None:
    """No site-packages (python -I -S): only the unpacked wheel and httpx's own
    dependencies are on the path, so an import of pydantic, chalicelib or anything
    else the server has fails here, however deep in the client it is made."""
    unpacked = tmp_path / "wheel"
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(unpacked)
    deps = httpx_alone(tmp_path / "deps")
    probe = (
        "import sys, json;"
        f"sys.path[:0] = [{str(unpacked)!r}, {str(deps)!r}];"
        "import spool_client, spool_client.aio, spool_client.client, spool_client.webhooks;"
        "from spool_client import Client, AsyncClient;"
        "Client('http://127.0.0.1:9', 'k').close();"
        "print(json.dumps([spool_client.__file__, sorted({m.split('.')[0] for m in sys.modules})]))"
    )
    ran = subprocess.run(
        [sys.executable, "-I", "-S", "-c", probe],
        cwd=tmp_path, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert ran.returncode == 0, ran.stderr
    where, loaded = json.loads(ran.stdout)
    assert where.startswith(str(unpacked))  # the wheel's copy, not the checkout's
    assert {"chalicelib", "local", "chalice", "pydantic", "boto3"} & set(loaded) == set()

"""`make run` / `make venv` on a fresh machine: the venv step recovers from a half-made
venv and refuses a Python too old, each in one line (infra/make_venv.sh), and a
PYTHON given names the venv's interpreter, an existing venv of another version too.

The Makefile and the script run for real, copied beside a probe project in tmp_path,
with pip kept off every index (PIP_NO_INDEX): nothing leaves the machine.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.procs import ROOT, guarded_env

PROBE_PYPROJECT = """\
[build-system]
requires = ["setuptools"]
build-backend = "setuptools.build_meta"

[project]
name = "probe"
version = "0"

[project.optional-dependencies]
dev = []
images = []
"""

# `python3 -m venv` where ensurepip is missing (Debian without python3-venv): it makes
# the folder and its python, then fails without pip, as the real one does.
NO_ENSUREPIP = f"""#!/bin/sh
if [ "$1" = "-m" ] && [ "$2" = "venv" ]; then
  shift 2
  {sys.executable} -m venv --without-pip "$@"
  echo "The virtual environment was not created successfully: ensurepip is not available." >&2
  exit 1
fi
exec {sys.executable} "$@"
"""

# A python3 that is 3.10: what an Ubuntu 22.04 or Debian 11 machine has.
PYTHON_310 = """#!/bin/sh
case "$1" in
  -V|--version) echo "Python 3.10.12"; exit 0 ;;
  -c) exit 1 ;;  # sys.version_info < (3, 11)
esac
echo "a 3.10 venv would be made here" >&2
exit 0
"""


def project(tmp_path: Path) -> Path:
    """The Makefile and infra/make_venv.sh as shipped, beside a probe pyproject.toml."""
    (tmp_path / "infra").mkdir()
    shutil.copy(ROOT / "Makefile", tmp_path / "Makefile")
    shutil.copy(ROOT / "infra" / "make_venv.sh", tmp_path / "infra" / "make_venv.sh")
    (tmp_path / "pyproject.toml").write_text(PROBE_PYPROJECT)
    return tmp_path


def script(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(0o755)
    return path


def make(
    where: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """`make ARGS` in `where`, with `env` added to the guarded environment."""
    extra = env or {}
    full = guarded_env(PIP_NO_INDEX="1", PIP_CONFIG_FILE=os.devnull, **extra)
    full.pop("MAKEFLAGS", None)
    if "PYTHON" not in extra:
        full.pop("PYTHON", None)  # a developer's own PYTHON is not the test's
    return subprocess.run(
        ["make", "--no-print-directory", *args],
        cwd=where,
        env=full,
        capture_output=True,
        text=True,
        timeout=300,
    )


def runs_pip(venv: Path) -> bool:
    python = venv / "bin" / "python"
    return (
        python.exists()
        and subprocess.run([python, "-m", "pip", "--version"], capture_output=True).returncode == 0
    )


def test_a_venv_left_without_pip_is_made_again_once_python_can_make_one(tmp_path: Path) -> None:
    """Before: the second `make` skipped the venv (`test -d .venv`) and failed with
    "No module named pip" at every run, until .venv was removed by hand."""
    where = project(tmp_path)
    broken = script(tmp_path / "python-without-ensurepip", NO_ENSUREPIP)

    first = make(where, "venv", f"PYTHON={broken}")
    assert first.returncode != 0
    assert (where / ".venv" / "bin" / "python").exists() and not runs_pip(where / ".venv")

    again = make(where, "venv", f"PYTHON={sys.executable}")
    assert "No module named pip" not in again.stdout + again.stderr
    assert runs_pip(where / ".venv")
    assert "making it again" in again.stderr
    assert "install python3-venv" in first.stderr  # the first failure said what to do


def test_a_python_older_than_3_11_is_refused_in_one_line_before_a_venv_is_made(
    tmp_path: Path,
) -> None:
    """Before: a 3.10 venv was made, pip refused the install, and every later run
    (PYTHON=python3.11 too) reused that venv and failed the same way."""
    where = project(tmp_path)
    old = script(tmp_path / "python3.10", PYTHON_310)

    result = make(where, "run", f"PYTHON={old}")
    assert result.returncode != 0
    refusal = [line for line in result.stderr.splitlines() if line.startswith("make: Spool")]
    assert refusal == [
        f"make: Spool needs Python 3.11 or newer; '{old}' is Python 3.10.12: "
        "name a newer one with PYTHON=python3.11"
    ]
    assert not (where / ".venv").exists()


def test_a_usable_venv_is_kept_as_it_is(tmp_path: Path) -> None:
    where = project(tmp_path)
    subprocess.run([sys.executable, "-m", "venv", where / ".venv"], check=True)
    marker = where / ".venv" / "kept"
    marker.write_text("")
    result = subprocess.run(
        ["bash", "infra/make_venv.sh", ".venv"],
        cwd=where,
        env=guarded_env(PYTHON=sys.executable),
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert marker.exists()


VERSION = 'import sys, pip, venv; v = sys.version_info; print(f"{v[0]}.{v[1]}")'


def version_of(python: str | Path) -> str:
    """`3.12` for a Python that runs and has pip and venv, else ""."""
    ran = subprocess.run([python, "-c", VERSION], capture_output=True, text=True)
    return ran.stdout.strip() if ran.returncode == 0 else ""


def another_python() -> str:
    """A Python 3.11 or newer on this machine of another minor version than this
    one's (pyenv keeps them under ~/.pyenv/versions), or the test is skipped."""
    import glob
    import shutil

    mine = f"{sys.version_info[0]}.{sys.version_info[1]}"
    found = [shutil.which(f"python3.{minor}") for minor in range(11, 16)]
    found += sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.1*/bin/python3")))
    for python in filter(None, found):
        version = version_of(python)
        if version and version != mine and tuple(map(int, version.split("."))) >= (3, 11):
            return python
    pytest.skip(f"no Python 3.11 or newer other than {mine} with pip and venv here")


@pytest.mark.timeout(600)
@pytest.mark.parametrize("given", ["command line", "environment"])
def test_python_given_makes_a_venv_of_another_version_again(tmp_path: Path, given: str) -> None:
    """README: `PYTHON=python3.12 make run` names another Python. Before: where .venv
    had been made (by another Python, its stamps newer than pyproject.toml), make had
    nothing to do and .venv stayed on the old Python without a word."""
    other = another_python()
    where = project(tmp_path)
    venv = where / ".venv"
    subprocess.run([sys.executable, "-m", "venv", venv], check=True)
    for stamp in (".installed", ".installed-serve"):
        (venv / stamp).touch()
    mine, theirs = version_of(sys.executable), version_of(other)

    if given == "command line":
        result = make(where, "venv", f"PYTHON={other}")
    else:
        result = make(where, "venv", env={"PYTHON": other})
    assert version_of(venv / "bin" / "python") == theirs, result.stderr
    assert f"make: .venv is Python {mine}, not the {theirs} of PYTHON={other}: making it again" in (
        result.stderr
    )

    # Without PYTHON, .venv stays on the Python that made it: not remade with python3.
    (venv / "kept").write_text("")
    make(where, "venv")
    assert version_of(venv / "bin" / "python") == theirs
    assert (venv / "kept").exists()


def test_an_exported_python_that_cannot_make_the_venv_leaves_a_working_one(
    tmp_path: Path,
) -> None:
    """PYTHON is exported for other tools too (node-gyp's): one that is no Python 3.11
    or newer neither remakes nor breaks a working .venv; `make` goes on with it."""
    where = project(tmp_path)
    venv = where / ".venv"
    subprocess.run([sys.executable, "-m", "venv", venv], check=True)
    for stamp in (".installed", ".installed-serve"):
        (venv / stamp).touch()
    (venv / "kept").write_text("")
    old = script(tmp_path / "python3.10", PYTHON_310)
    result = make(where, "venv", env={"PYTHON": str(old)})
    assert result.returncode == 0, result.stderr
    assert (venv / "kept").exists() and (venv / ".installed").exists()

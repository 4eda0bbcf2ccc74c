"""Check and finish the Lambda zip that `chalice package` wrote.

    python infra/lambda_zip.py check out/sam.json out/deployment.zip
    python infra/lambda_zip.py bytecode TARGET out/deployment.zip

`check` fails when the zip's compiled code cannot run on what the template
declares: every *.dist-info/WHEEL Tag line, every extension module's file name
and every shipped .pyc must fit each function's Runtime (python3.12 -> cp312)
and Architectures (arm64 -> aarch64). A zip that imports fine on a laptop and
dies with "No module named 'pydantic_core._pydantic_core'" on the first cold
start is exactly such a disagreement.

`bytecode` replaces whatever __pycache__ Chalice copied from the working tree
(the developer's own Python's, checked by timestamp) with bytecode for the
target's Python, so a cold start does not compile: `unchecked-hash` .pyc files,
since /var/task is read-only and its files never change under the bytecode.
Bytecode is only correct for the Python minor version that wrote it, so it is
compiled only by an interpreter of exactly the target's version: this one,
LAMBDA_BYTECODE_PYTHON, `python3.X` on PATH, or a pyenv install of 3.X. Without one the zip
ships no bytecode at all, and the step says so.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from infra import lambda_wheels  # noqa: E402

FUNCTION = "AWS::Serverless::Function"
# CPython's extension suffix: name.cpython-312-aarch64-linux-gnu.so
EXTENSION = re.compile(r"\.cpython-(\d+)-([a-z0-9_]+)-linux-gnu\.so$")
PYC = re.compile(r"__pycache__/[^/]+\.cpython-(\d+)(\.opt-\d)?\.pyc$")
MANYLINUX = re.compile(r"^manylinux_(\d+)_(\d+)_(.+)$")
LEGACY = {"manylinux1": (2, 5), "manylinux2010": (2, 12), "manylinux2014": (2, 17)}
MACHINE_OF = {"arm64": "aarch64", "x86_64": "x86_64"}


# -- what the template declares -----------------------------------------------------


def declared(template: Mapping[str, Any]) -> dict[str, tuple[str, tuple[str, ...]]]:
    """Each function's (Runtime, Architectures), Globals applied (Lambda's default: x86_64)."""
    glob = template.get("Globals", {}).get("Function", {})
    out: dict[str, tuple[str, tuple[str, ...]]] = {}
    for name, resource in template.get("Resources", {}).items():
        if resource.get("Type") != FUNCTION:
            continue
        props = resource.get("Properties", {})
        runtime = str(props.get("Runtime", glob.get("Runtime", "")))
        archs = tuple(props.get("Architectures", glob.get("Architectures", ["x86_64"])))
        out[name] = (runtime, archs)
    return out


# -- what the zip holds ---------------------------------------------------------------


def wheel_tags(archive: zipfile.ZipFile) -> dict[str, list[str]]:
    """Each vendored distribution's WHEEL Tag lines (py3-none-any, cp312-cp312-manylinux...)."""
    tags: dict[str, list[str]] = {}
    for name in archive.namelist():
        parts = name.split("/")
        if len(parts) == 2 and parts[0].endswith(".dist-info") and parts[1] == "WHEEL":
            text = archive.read(name).decode("utf-8", "replace")
            tags[parts[0]] = [
                line.split(":", 1)[1].strip()
                for line in text.splitlines()
                if line.startswith("Tag:")
            ]
    return tags


def _glibc_fits(platform: str, machine: str, glibc: tuple[int, int]) -> bool:
    if platform == "any":
        return True
    if platform == f"linux_{machine}":
        return True
    for legacy, level in LEGACY.items():
        if platform == f"{legacy}_{machine}":
            return level <= glibc
    match = MANYLINUX.match(platform)
    if match is None or match.group(3) != machine:
        return False
    return (int(match.group(1)), int(match.group(2))) <= glibc


def tag_fits(tag: str, abi: str, machine: str, glibc: tuple[int, int]) -> bool:
    """Whether one wheel tag (interpreter-abi-platform) runs on CPython `abi` on `machine`."""
    try:
        interpreter, tag_abi, platform = tag.split("-")
    except ValueError:
        return False
    if not _glibc_fits(platform, machine, glibc):
        return False
    version = int(abi[2:])
    if tag_abi == "none":
        # Pure Python (py3, py312) or a cp tag that still needs no ABI.
        return interpreter.startswith("py") or interpreter == abi
    if tag_abi == "abi3":
        # The stable ABI: built for cp3X, runs on every CPython from 3.X on.
        return interpreter.startswith("cp3") and int(interpreter[2:]) <= version
    return interpreter == abi and tag_abi == abi


def problems(template: Mapping[str, Any], archive: zipfile.ZipFile) -> list[str]:
    """Every way the zip's compiled code disagrees with a function's runtime or architecture."""
    found: list[str] = []
    functions = declared(template)
    if not functions:
        return ["the template declares no AWS::Serverless::Function"]
    tags = wheel_tags(archive)
    if not tags:
        found.append("the zip holds no *.dist-info/WHEEL: its dependencies were not vendored")
    names = archive.namelist()
    for function, (runtime, archs) in sorted(functions.items()):
        if not runtime.startswith("python3."):
            found.append(f"{function}: Runtime {runtime!r} is not a Python 3 runtime")
            continue
        abi = "cp" + runtime.removeprefix("python").replace(".", "")
        for arch in archs:
            machine = MACHINE_OF.get(arch)
            if machine is None:
                found.append(f"{function}: unknown architecture {arch!r}")
                continue
            where = f"{function} ({runtime}, {arch})"
            for dist, dist_tags in sorted(tags.items()):
                fits = [
                    t for t in dist_tags if tag_fits(t, abi, machine, lambda_wheels.LAMBDA_GLIBC)
                ]
                if not fits:
                    found.append(f"{where}: {dist} is built for {', '.join(dist_tags)}")
            for name in names:
                ext = EXTENSION.search(name)
                if ext and (f"cp{ext.group(1)}" != abi or ext.group(2) != machine):
                    found.append(f"{where}: {name} is an extension for another Python or machine")
                pyc = PYC.search(name)
                if pyc and f"cp{pyc.group(1)}" != abi:
                    found.append(f"{where}: {name} is bytecode for another Python")
    return found


# -- bytecode -----------------------------------------------------------------------


def _compile_entries(archive: zipfile.ZipFile, tag: str) -> Iterable[tuple[zipfile.ZipInfo, bytes]]:
    """An unchecked-hash .pyc for every .py in the archive (this interpreter's version)."""
    from importlib._bootstrap_external import _code_to_hash_pyc  # type: ignore[attr-defined]

    for info in archive.infolist():
        if not info.filename.endswith(".py") or info.is_dir() or vendored_tests(info.filename):
            continue
        source = archive.read(info)
        try:
            code = compile(source, info.filename, "exec", dont_inherit=True)
        except (SyntaxError, ValueError):
            continue  # e.g. a package's Python 2 example: it never runs, as before
        folder, _, base = info.filename.rpartition("/")
        name = (
            f"{folder}/__pycache__/{base[:-3]}.{tag}.pyc"
            if folder
            else f"__pycache__/{base[:-3]}.{tag}.pyc"
        )
        pyc = zipfile.ZipInfo(name, date_time=info.date_time)
        pyc.compress_type = zipfile.ZIP_DEFLATED
        pyc.external_attr = 0o644 << 16
        data = _code_to_hash_pyc(code, importlib.util.source_hash(source), False)
        yield pyc, bytes(data)


def vendored_tests(name: str) -> bool:
    """A dependency's own test suite (croniter/tests/, ...): never imported by the app,
    half a megabyte unzipped in a package Lambda loads at every cold start."""
    parts = name.split("/")
    return len(parts) > 2 and parts[1] in ("tests", "test") and parts[0] != "chalicelib"


def rewrite(zip_path: Path, compile_here: bool) -> int:
    """Drop the zip's .pyc files and its dependencies' test suites; with compile_here,
    add this interpreter's .pyc. Returns the count added."""
    tmp = zip_path.with_suffix(".tmp.zip")
    added = 0
    with zipfile.ZipFile(zip_path) as src, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as out:
        for info in src.infolist():
            if "__pycache__/" in info.filename or info.filename.endswith(".pyc"):
                continue
            if vendored_tests(info.filename):
                continue
            out.writestr(info, src.read(info))
        if compile_here:
            tag = sys.implementation.cache_tag
            for info, data in _compile_entries(src, tag):
                out.writestr(info, data)
                added += 1
    tmp.replace(zip_path)
    return added


def _interpreter_for(version: str) -> str | None:
    """A Python of exactly `version` to compile with, or None."""
    pyenv = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "versions"
    candidates = [
        os.environ.get("LAMBDA_BYTECODE_PYTHON", ""),
        shutil.which(f"python{version}") or "",
        # pyenv's shim answers only for the active version; its installs answer always.
        *sorted(str(p) for p in pyenv.glob(f"{version}.*/bin/python{version}")),
    ]
    for candidate in filter(None, candidates):
        try:
            result = subprocess.run(
                [candidate, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                capture_output=True, text=True, timeout=30,
            )  # fmt: skip
        except OSError:
            continue
        if result.returncode == 0 and result.stdout.strip() == version:
            return candidate
    return None


def bytecode(target_name: str, zip_path: Path) -> str:
    """Give the zip bytecode for the target's Python, or none; say which."""
    tgt = lambda_wheels.target(target_name)
    here = f"{sys.version_info[0]}.{sys.version_info[1]}"
    if here == tgt.python_version:
        count = rewrite(zip_path, compile_here=True)
        return f"bytecode: {count} .pyc files for CPython {here} (unchecked-hash)"
    other = _interpreter_for(tgt.python_version)
    if other is not None:
        subprocess.run([other, __file__, "bytecode", target_name, str(zip_path)], check=True)
        return f"bytecode: compiled by {other}"
    rewrite(zip_path, compile_here=False)
    return (
        f"bytecode: none shipped. The target runs CPython {tgt.python_version}, this is "
        f"{here}, and no python{tgt.python_version} was found (set LAMBDA_BYTECODE_PYTHON): "
        "bytecode from another version would be ignored, so Lambda compiles at cold start"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="action", required=True)
    check = sub.add_parser("check", help="the zip's wheels fit the template's runtime")
    check.add_argument("template", type=Path)
    check.add_argument("zip", type=Path)
    code = sub.add_parser("bytecode", help="ship .pyc for the target's Python")
    code.add_argument("target")
    code.add_argument("zip", type=Path)
    args = parser.parse_args(argv)
    if args.action == "check":
        template = json.loads(args.template.read_text())
        with zipfile.ZipFile(args.zip) as archive:
            found = problems(template, archive)
        for line in found:
            print(f"lambda zip: {line}", file=sys.stderr)
        return 1 if found else 0
    print(bytecode(args.target, args.zip))
    return 0


if __name__ == "__main__":
    sys.exit(main())

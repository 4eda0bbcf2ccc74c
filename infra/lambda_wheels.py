"""The Lambda zip's dependencies: wheels for one runtime and architecture, vendored.

    python infra/lambda_wheels.py download TARGET DIR   # fetch wheels (registry)
    python infra/lambda_wheels.py stage TARGET DIR --dest PROJECT
        # a Chalice project for `chalice --project-dir PROJECT package`: the app,
        # its config and vendor/ with the wheels installed (offline)

TARGET is `lambda-arm64` / `lambda-x86_64` (infra/lambda_target.py's runtime on
that architecture: what deploys; plain `lambda` is its DEFAULT_ARCH) or `host`
(this machine's Python and architecture: what the tests unzip and run, and what
bench/cold_start.py times).

Why not let `chalice package` fetch them: it asks pip for wheels matching the
Python that runs chalice (3.11 here), not the runtime the template declares,
and for x86_64 only unless told otherwise. Here the requirements live in
requirements-lambda.txt (requirements.txt stays empty, so chalice fetches
nothing) and pip installs them with `--platform/--python-version
--implementation cp --only-binary=:all:` into vendor/, which Chalice copies
into the zip as it is.

`download` is the only step that needs the registry; `make lambda-wheels` runs
it before the tests (pytest refuses the network), and `vendor` works from the
download folder alone (`--no-index --find-links`).
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from infra import lambda_target  # noqa: E402

REQUIREMENTS = ROOT / "requirements-lambda.txt"
# Amazon Linux 2023 (the python3.12 and python3.13 runtimes) has glibc 2.34:
# any manylinux wheel for glibc 2.17 up to 2.34 runs there.
LAMBDA_GLIBC = (2, 34)
OLDEST_MANYLINUX = 17
HOST = "host"


@dataclass(frozen=True)
class Target:
    """A Python version and machine the zip's compiled wheels are built for."""

    name: str
    python_version: str  # "3.12"
    machine: str  # "aarch64", "x86_64": the end of a wheel's platform tag
    glibc: tuple[int, int]

    @property
    def abi(self) -> str:
        return "cp" + self.python_version.replace(".", "")

    def platforms(self) -> list[str]:
        """pip's --platform values: every manylinux glibc level this target runs.

        pip takes a perennial tag (manylinux_2_34_aarch64) literally, so each
        level from 2.17 up is listed; the legacy manylinux2014 alias makes pip
        add manylinux2010 and manylinux1 for x86_64.
        """
        major, newest = self.glibc
        tags = [
            f"manylinux_{major}_{m}_{self.machine}" for m in range(OLDEST_MANYLINUX, newest + 1)
        ]
        return [*reversed(tags), f"manylinux2014_{self.machine}"]

    def pip_args(self) -> list[str]:
        args = ["--only-binary=:all:", "--implementation", "cp"]
        args += ["--python-version", self.python_version]
        for tag in self.platforms():
            args += ["--platform", tag]
        return args


def target(name: str) -> Target:
    """`host`, `lambda` (the default architecture) or `lambda-<architecture>`."""
    if name == "lambda":
        name = f"lambda-{lambda_target.DEFAULT_ARCH}"
    if name == HOST:
        libc, version = platform.libc_ver()
        if libc != "glibc":
            raise ValueError(f"the host target needs glibc (this machine has {libc or 'none'})")
        major, minor = (int(part) for part in version.split(".")[:2])
        machine = platform.machine()
        return Target(HOST, f"{sys.version_info[0]}.{sys.version_info[1]}", machine, (major, minor))
    prefix, _, arch = name.partition("-")
    if prefix != "lambda" or not arch:
        raise ValueError(f"unknown target {name!r}: use host or lambda-<architecture>")
    lambda_target.platform_tag(arch)  # refuses an architecture Lambda does not offer
    machine = lambda_target.MACHINES[arch]
    return Target(name, lambda_target.PYTHON_VERSION, machine, LAMBDA_GLIBC)


def pip(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "pip", *args], check=True)


def download(tgt: Target, dest: Path) -> None:
    """Fetch the target's wheels for requirements-lambda.txt (the registry's step)."""
    # Into a fresh folder, swapped in whole: a changed requirement leaves no stale
    # wheel to pick from, and a package being built meanwhile never sees half a set.
    dest.parent.mkdir(parents=True, exist_ok=True)
    fresh = Path(tempfile.mkdtemp(prefix=f".{dest.name}-", dir=dest.parent))
    try:
        pip("download", "--quiet", *tgt.pip_args(), "-r", str(REQUIREMENTS), "-d", str(fresh))
        stale = dest.with_name(f".{dest.name}-stale-{os.getpid()}")
        if dest.exists():
            dest.rename(stale)
        fresh.rename(dest)
        shutil.rmtree(stale, ignore_errors=True)
    finally:
        shutil.rmtree(fresh, ignore_errors=True)


def vendor(tgt: Target, wheels: Path, dest: Path) -> None:
    """Install the downloaded wheels into dest (Chalice's vendor/), offline."""
    if not any(wheels.glob("*.whl")):
        raise SystemExit(f"no wheels in {wheels}: run `make lambda-wheels` (it needs the registry)")
    if dest.exists():
        shutil.rmtree(dest)
    pip(
        "install", "--quiet", "--no-index", "--find-links", str(wheels),
        "--no-compile", "--no-warn-conflicts",
        *tgt.pip_args(),
        "--target", str(dest), "-r", str(REQUIREMENTS),
    )  # fmt: skip
    # Console scripts are of no use in a Lambda function.
    shutil.rmtree(dest / "bin", ignore_errors=True)


# What a Chalice project is made of; everything else in the checkout stays out.
# (infra/resources.json: `--merge-template` is read from the project folder.)
PROJECT_FILES = ("app.py", "infra/resources.json")
PROJECT_DIRS = ("chalicelib",)
CHALICE_FILES = ("config.json", "policy-*.json")


def stage(tgt: Target, wheels: Path, project: Path) -> None:
    """A Chalice project of its own for one `make package`: the app, .chalice's config
    and policies, an empty requirements.txt and vendor/ with the target's wheels.

    Its own folder (under PACKAGE_DIR), not the checkout: two packages built at
    once (two stages, two targets, a test beside a developer) never share a
    vendor/, and no __pycache__ of the developer's Python reaches the zip.
    """
    if project.exists():
        shutil.rmtree(project)
    (project / ".chalice").mkdir(parents=True)
    for name in PROJECT_FILES:
        (project / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, project / name)
    for name in PROJECT_DIRS:
        ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
        shutil.copytree(ROOT / name, project / name, ignore=ignore)
    for pattern in CHALICE_FILES:
        for path in (ROOT / ".chalice").glob(pattern):
            shutil.copy2(path, project / ".chalice" / path.name)
    # Empty: Chalice would fetch wheels for the Python running it (see the docstring).
    (project / "requirements.txt").write_text("")
    vendor(tgt, wheels, project / "vendor")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("action", choices=("download", "vendor", "stage", "describe"))
    parser.add_argument("target", help="host, lambda or lambda-<architecture>")
    parser.add_argument("dir", nargs="?", type=Path, help="the wheel folder")
    parser.add_argument("--dest", type=Path, help="vendor/ (vendor) or the project (stage)")
    args = parser.parse_args(argv)
    try:
        tgt = target(args.target)
    except ValueError as exc:
        parser.error(str(exc))
    if args.action == "describe":
        print(f"{tgt.name}: CPython {tgt.python_version} ({tgt.abi}) on {tgt.machine}, "
              f"glibc <= {tgt.glibc[0]}.{tgt.glibc[1]}")  # fmt: skip
        return 0
    if args.dir is None:
        parser.error(f"{args.action} needs the wheel folder")
    if args.action == "download":
        download(tgt, args.dir)
    elif args.dest is None:
        parser.error(f"{args.action} needs --dest")
    elif args.action == "vendor":
        vendor(tgt, args.dir, args.dest)
    else:
        stage(tgt, args.dir, args.dest)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Child processes in tests: the environment they get, and how they are stopped."""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.netguard import spool_netguard as netguard

ROOT = Path(__file__).resolve().parent.parent
# Where the Python processes tests start keep their compiled modules when the shell
# asked for none in the checkout (bytecode_kept): pytest's own cache folder, ignored
# by git and removed by `make clean`.
PYCACHE = ROOT / ".pytest_cache" / "pycache"


def bytecode_kept(environ: Mapping[str, str]) -> dict[str, str]:
    """`environ` for the processes tests start, their bytecode kept under PYCACHE
    when PYTHONDONTWRITEBYTECODE forbade writing it beside the sources.

    With PYTHONDONTWRITEBYTECODE set (CI images and some shells set it, to keep
    __pycache__ out of the checkout), every `spool serve`, `spool worker`, CLI run
    and crash-test restart compiled Spool's 20,000-odd lines again: 0.2 to 0.4 s of
    each of a few thousand starts on a loaded 2-core machine. PYTHONPYCACHEPREFIX
    writes the bytecode under PYCACHE instead, so the checkout stays as clean as that
    setting asked. A shell that named its own PYTHONPYCACHEPREFIX keeps both."""
    out = dict(environ)
    if out.get("PYTHONDONTWRITEBYTECODE") and not out.get("PYTHONPYCACHEPREFIX"):
        del out["PYTHONDONTWRITEBYTECODE"]
        out["PYTHONPYCACHEPREFIX"] = str(PYCACHE)
    return out


def guarded_env(**extra: str) -> dict[str, str]:
    """This process's environment plus the AWS guard and the network guard: a child
    never reaches real AWS, the metadata address or anything outside 127.0.0.0/8,
    whatever the developer's shell holds."""
    env = netguard.child_env(os.environ)
    env.update(
        AWS_EC2_METADATA_DISABLED="true",
        AWS_DEFAULT_REGION="us-east-1",
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        PYTHONUNBUFFERED="1",
        # pip (run by `chalice package`) asks a closed local port, not pypi.org: it
        # fails at once, with no traffic, and chalice goes on as it does offline.
        PIP_INDEX_URL="http://127.0.0.1:9/simple",
        PIP_RETRIES="0",
        PIP_DISABLE_PIP_VERSION_CHECK="1",
        **extra,
    )
    env.pop("AWS_PROFILE", None)
    env.pop("AWS_SESSION_TOKEN", None)
    return env


SPOOL = Path(sys.executable).with_name("spool")


def run_spool(folder: Path, *argv: str, **env: str) -> subprocess.CompletedProcess[str]:
    """`spool ARGV` run in `folder` as a user runs it, the demo handlers on, under the
    guards; its output read in the encoding PYTHONIOENCODING gives it (UTF-8 unless
    `env` says), what that cannot decode replaced."""
    return subprocess.run(
        [str(SPOOL), *argv],
        cwd=folder,
        env=guarded_env(SPOOL_DEMO_HANDLERS="true", **env),
        capture_output=True,
        encoding=env.get("PYTHONIOENCODING", "utf-8"),
        errors="replace",
        timeout=120,
    )


def stop(process: subprocess.Popen[Any], timeout: float = 15) -> None:
    """SIGTERM (a graceful stop is part of what is tested), SIGKILL if it hangs."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


@dataclass
class Served:
    """A `spool serve` child that printed its banner: the process, the banner, its URL."""

    proc: subprocess.Popen[str]
    banner: str
    url: str


def read_banner(proc: subprocess.Popen[str]) -> str:
    """What a starting `spool serve` printed up to its last banner line ("Ctrl-C
    stops."), or all it printed if it ended before that."""
    assert proc.stdout is not None
    lines: list[str] = []
    for line in proc.stdout:
        lines.append(line)
        if line.startswith("Ctrl-C stops"):
            break
    return "".join(lines)


def spool_serve(*args: str, env: dict[str, str], stderr: int = subprocess.PIPE) -> Served:
    """Start `spool serve --port 0 ARGS` and read its banner (up to "Ctrl-C stops.").

    The caller stops it (`stop(served.proc)`, or SIGINT to test Ctrl-C). A child
    that exits before its banner fails the test with what it printed.
    """
    proc = subprocess.Popen(
        [sys.executable, "-m", "local.cli", "serve", "--port", "0", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=stderr,
        text=True,
    )
    banner = read_banner(proc)
    found = re.search(r"serving app\.py on (http://127\.0\.0\.1:\d+)", banner)
    if found is None:
        stop(proc)
        errors = proc.stderr.read() if proc.stderr else ""
        raise AssertionError(f"spool serve did not start:\n{banner}{errors}")
    return Served(proc, banner, found.group(1))


@contextlib.contextmanager
def serving_url(*args: str, env: dict[str, str], stderr: int = subprocess.DEVNULL) -> Iterator[str]:
    """`spool_serve`'s URL for a `with` (a fixture's life), the server stopped after."""
    served = spool_serve(*args, env=env, stderr=stderr)
    try:
        yield served.url
    finally:
        stop(served.proc)


def spool_serve_logged(log: Path, *args: str, env: dict[str, str]) -> Served:
    """`spool_serve` with its log lines appended to LOG instead of a pipe: a test that
    runs for a while cannot fill the pipe, and it can read what the server said."""
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        return spool_serve(*args, env=env, stderr=fd)
    finally:
        os.close(fd)  # the child has its own copy

"""`chalice local --stage local` serves app.py on the SQLite store."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from tests.procs import stop

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def chalice_command() -> list[str]:
    found = Path(sys.executable).with_name("chalice")
    if found.exists():
        return [str(found)]
    which = shutil.which("chalice")
    if which is None:
        pytest.fail("the chalice command is missing (it ships with the chalice package)")
    return [which]


def start_chalice_local(tmp_path: Path, port: int, env: dict[str, str]) -> subprocess.Popen[bytes]:
    """`chalice local --stage local` on `port`, from a copy of the project files it
    needs: the stage's relative sqlite:///.spool/spool.db lands under the working
    directory, which must not be the checkout."""
    for name in ("app.py", "chalicelib", ".chalice"):
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(
                src, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__", "deployments")
            )
        else:
            shutil.copy(src, tmp_path / name)
    return subprocess.Popen(
        [*chalice_command(), "local", "--stage", "local", "--no-autoreload", "--port", str(port)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def test_chalice_local_answers_over_a_socket(tmp_path) -> None:
    port = free_port()
    env = {**os.environ, "SPOOL_API_KEYS": "local-key=local"}
    proc = start_chalice_local(tmp_path, port, env)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        health = None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                health = requests.get(f"{base}/health", timeout=5)
                break
            except requests.ConnectionError:
                time.sleep(0.2)
        assert health is not None, proc.stderr.read().decode() if proc.stderr else ""
        assert health.status_code == 200 and health.json() == {"status": "ok", "store": "ok"}
        created = requests.post(
            f"{base}/enqueue", json={"type": "echo"}, headers={"X-API-Key": "local-key"}, timeout=10
        )
        assert created.status_code == 201
        assert (tmp_path / ".spool" / "spool.db").exists()  # the local stage's SQLite store
    finally:
        stop(proc, 10)

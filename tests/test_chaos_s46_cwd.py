"""A handler that changes the working directory must not move what Spool opens later.

The working directory is the process's, and a handler may change it (to run a tool
in a scratch folder, say) without putting it back. Spool's relative paths (the
default store, sqlite:///.spool/spool.db, and SPOOL_BLOB_DIR's .spool/blobs) name
files under the folder the command was started in, for as long as it runs.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import requests

from tests.procs import ROOT, Served, guarded_env, read_banner, stop
from tests.test_serve_multiproc import children_of, wait_for

KEY = "chaos-cwd-key-0123456789"
HEADERS = {"X-API-Key": KEY}
PROCESSES = 2
# A handler module the worker imports: it moves the process to the folder it is given.
WANDERER = """
import json
import os

from chalicelib.handlers import handler


@handler("wander", max_attempts=1)
def wander(payload, ctx):
    os.chdir(payload["to"])
    return os.getcwd()
"""

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc"),
]


@contextmanager
def serving_from(start: Path, modules: Path) -> Iterator[Served]:
    """`spool serve --processes 2` started in `start`, on the default relative store."""
    env = guarded_env(
        SPOOL_API_KEYS=f"{KEY}=chaos",
        SPOOL_DEMO_HANDLERS="true",
        SPOOL_HANDLERS="chaos_wanderer",
        PYTHONPATH=os.pathsep.join([str(ROOT), str(modules)]),
    )
    env.pop("SPOOL_STORE_URL", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "local.cli", "serve", "--port", "0", "--processes", "2"],
        cwd=start,
        env=env,
        stdout=subprocess.PIPE,
        stderr=(start.parent / "serve.log").open("w"),
        text=True,
    )
    banner = read_banner(proc)
    url = next((w for w in banner.split() if w.startswith("http://127.0.0.1:")), "")
    served = Served(proc, banner, url.rstrip("/"))
    try:
        assert url, banner
        yield served
    finally:
        stop(proc, timeout=30)


def _state(base: str, job: str) -> str:
    reply = requests.get(f"{base}/status/{job}", headers=HEADERS, timeout=10)
    return str(reply.json().get("state", reply.status_code))


def _enqueue(base: str, kind: str, payload: dict[str, str]) -> str:
    body = {"type": kind, "payload": payload}
    reply = requests.post(f"{base}/enqueue", json=body, headers=HEADERS, timeout=10)
    assert reply.status_code == 201, reply.text
    return str(reply.json()["id"])


@pytest.mark.timeout(180)
def test_a_replaced_server_process_opens_the_store_the_supervisor_started_with(
    tmp_path: Path,
) -> None:
    """Was: the supervisor ran the worker, a handler's os.chdir moved the supervisor,
    and a server process started after that (a crash, a hang) inherited the new
    folder: it opened a new, empty .spool/spool.db there and acknowledged jobs into
    it that no worker would ever run, answering 404 for every job made before."""
    start, elsewhere, modules = tmp_path / "start", tmp_path / "elsewhere", tmp_path / "mods"
    for folder in (start, elsewhere, modules):
        folder.mkdir()
    (modules / "chaos_wanderer.py").write_text(WANDERER)
    with serving_from(start, modules) as served:
        before = _enqueue(served.url, "echo", {})
        moved = _enqueue(served.url, "wander", {"to": str(elsewhere)})
        assert wait_for(lambda: _state(served.url, moved) == "succeeded", timeout=60), (
            _state(served.url, moved),
            (tmp_path / "serve.log").read_text()[-3000:],
        )
        kids = children_of(served.proc.pid)
        assert len(kids) == PROCESSES
        for victim in kids:
            os.kill(victim, signal.SIGKILL)

        def replaced() -> bool:
            now = children_of(served.proc.pid)
            return len(now) == PROCESSES and not set(now) & set(kids)

        assert wait_for(replaced, timeout=30)
        # Every answer now comes from a replaced process, whichever the kernel picks.
        assert _state(served.url, before) == "succeeded"
        after = _enqueue(served.url, "echo", {})
        assert wait_for(lambda: _state(served.url, after) == "succeeded", timeout=60)
    assert not (elsewhere / ".spool").exists()


def _png(path: Path) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True)
    Image.new("RGB", (8, 8), (200, 30, 30)).save(path, "PNG")


@pytest.mark.timeout(120)
def test_blobs_stay_in_the_folder_the_worker_started_in_after_a_handler_moves(
    tmp_path: Path,
) -> None:
    """Was: SPOOL_BLOB_DIR (default .spool/blobs) was read against the working directory
    of the moment, so after one handler's os.chdir every later resize_image looked for
    its source, and wrote its outputs, under the folder that handler left the process in."""
    start, elsewhere, modules = tmp_path / "start", tmp_path / "elsewhere", tmp_path / "mods"
    for folder in (elsewhere, modules):
        folder.mkdir()
    (modules / "chaos_wanderer.py").write_text(WANDERER)
    _png(start / ".spool" / "blobs" / "default" / "in.png")
    env = guarded_env(
        SPOOL_HANDLERS="chaos_wanderer",
        SPOOL_STORE_URL=f"sqlite:///{tmp_path}/spool.db",
        PYTHONPATH=os.pathsep.join([str(ROOT), str(modules)]),
    )
    env.pop("SPOOL_BLOB_DIR", None)

    def spool(*args: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "local.cli", *args],
            cwd=start,
            env=env,
            capture_output=True,
            text=True,
            timeout=90,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    spool("enqueue", "wander", "--payload", json.dumps({"to": str(elsewhere)}), "--priority", "9")
    resize = {"key": "default/in.png", "widths": [4]}
    job = spool("enqueue", "resize_image", "--payload", json.dumps(resize), "--max-attempts", "1")
    spool("worker", "--burst", "--concurrency", "1")
    shown = spool("status", job.split()[0])
    assert "succeeded" in shown, shown
    assert list((start / ".spool" / "blobs" / "default" / "resized").rglob("*.png"))
    assert not (elsewhere / ".spool").exists()


def test_a_server_process_starts_in_the_supervisor_s_first_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The folder is the one the supervisor was made in, whatever the working directory
    is when a process is (re)started; and once that folder is gone a process still
    starts (in the working directory of the moment) instead of Popen raising in the
    supervisor's watch loop."""
    from local.multiproc import Supervisor, listening_sockets

    first, later, out = tmp_path / "first", tmp_path / "later", tmp_path / "cwd.txt"
    first.mkdir()
    later.mkdir()
    tell = [sys.executable, "-c", "import os; open(os.environ['OUT'], 'w').write(os.getcwd())"]
    monkeypatch.chdir(first)
    made = listening_sockets("127.0.0.1", 0, 1)
    supervisor = Supervisor(made, 2, guarded_env(OUT=str(out)), command=tell)
    monkeypatch.chdir(later)
    [child] = supervisor.children
    try:
        for folder in (first, later):
            supervisor.spawn(child)
            assert child.proc is not None
            assert child.proc.wait(30) == 0
            assert out.read_text() == str(folder)
            if folder == first:
                first.rmdir()  # the second round: the first folder is gone
    finally:
        for sock in made:
            sock.close()

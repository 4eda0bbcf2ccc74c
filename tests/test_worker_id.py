"""Worker ids stay apart when two processes share a hostname and a pid.

With host networking (docker --network host, Kubernetes hostNetwork) every
container's worker can be PID 1 on the same hostname. Each child here patches
os.getpid and socket.gethostname to say so, as such containers would.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from chalicelib import worker_id
from chalicelib.storage import open_store

ROOT = Path(__file__).resolve().parent.parent

CHILD = """
import json, os, socket, sys
from datetime import datetime, timezone
os.getpid = lambda: 1
socket.gethostname = lambda: "box"
from chalicelib import worker_id
from chalicelib.api.metrics import instance_name
from chalicelib.storage import open_store
store = open_store(sys.argv[1])
me = worker_id.process()
if sys.argv[2] == "beat":
    store.beat(me, None, datetime.now(timezone.utc))
else:
    store.forget_worker(me)  # a clean stop signs off
store.close()
print(json.dumps({"process": me, "current": worker_id.current(), "instance": instance_name()}))
"""


def _child(url: str, action: str) -> dict[str, str]:
    done = subprocess.run(
        [sys.executable, "-c", CHILD, url, action],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "AWS_LAMBDA_LOG_STREAM_NAME": ""},
    )
    assert done.returncode == 0, done.stderr
    found: dict[str, str] = json.loads(done.stdout.splitlines()[-1])
    return found


def test_same_host_and_pid_are_two_live_workers(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'spool.db'}"
    first = _child(url, "beat")
    second = _child(url, "beat")
    assert first["process"].startswith("box:1:")  # still names the machine and pid
    assert first["process"] != second["process"]
    assert first["current"] != second["current"]  # attempts and leases tell them apart too
    assert first["instance"] != second["instance"]  # separate Pushgateway groups
    store = open_store(url)
    try:
        assert len(store.live_workers(60)) == 2
    finally:
        store.close()


def test_one_clean_stop_keeps_the_others_heartbeat(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'spool.db'}"
    stayer = _child(url, "beat")
    _child(url, "forget")  # another PID 1 on "box" stops cleanly
    store = open_store(url)
    try:
        assert [b.worker for b in store.live_workers(60)] == [stayer["process"]]
    finally:
        store.close()


def test_a_forked_child_gets_its_own_id() -> None:
    """multiprocessing and pre-fork servers fork: the child is another worker."""
    parent = worker_id.process()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child only reports back
        os.write(write, worker_id.process().encode())
        os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    child = os.read(read, 200).decode()
    os.close(read)
    assert child and child != parent
    assert worker_id.process() == parent  # the parent's own id does not move


def test_a_forked_child_reads_its_own_pid() -> None:
    """The pid is kept, not asked of the system each time (worker_id.pid): a forked
    child's is its own, in its worker id and its process start too."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child only reports back
        said = f"{os.getpid()} {worker_id.pid()} {worker_id.this_process()[0]}"
        said += f" {worker_id.host_process().split(':')[1]}"
        os.write(write, said.encode())
        os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    child = os.read(read, 200).decode().split()
    os.close(read)
    assert len(child) == 4 and len(set(child)) == 1 and child[0] == str(pid)
    assert worker_id.pid() == os.getpid()

"""A handler whose forked child comes back into Spool: the child ends there.

A handler may fork (to isolate a leaky library, to run a C tool's setup) and let the
child return or raise, as a careless handler does, instead of ending it with
os._exit. The child then held a copy of the whole worker with one thread: the pool
thread, which went back for the next job in its copy of the inbox while no
dispatcher ran to write anything. It never exited, ignored SIGTERM (the worker's
own handler only sets a flag no one reads there), kept the worker's stdout and
stderr open (`spool worker --burst | tee log` never ended), and a parent that
waited for it hung until the handler's timeout made the attempt a failure.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.procs import ROOT, guarded_env

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")

# The parent waits for its child and returns how it ended; the child comes back
# into Spool in the way the payload names.
FORKER = """
import os
import sys

from chalicelib.handlers import handler


@handler("forker", max_attempts=1, timeout=5)
def forker(payload, ctx):
    pid = os.fork()
    if pid == 0:
        with open(payload["pids"], "a") as out:
            out.write(f"{os.getpid()}\\n")
        if payload["how"] == "exit":
            sys.exit(3)
        if payload["how"] == "raise":
            raise RuntimeError("the child's own failure")
        return "the child's result"
    _, status = os.waitpid(pid, 0)
    return {"child_exit": os.waitstatus_to_exitcode(status)}
"""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").exists() and " Z " not in Path(f"/proc/{pid}/stat").read_text()


@pytest.fixture
def pids_file(tmp_path: Path) -> Iterator[Path]:
    """Where each forked child writes its pid; any left alive are killed afterwards."""
    path = tmp_path / "children.txt"
    path.touch()
    yield path
    for line in path.read_text().split():
        if _alive(int(line)):
            os.kill(int(line), signal.SIGKILL)


@pytest.mark.timeout(120)
def test_a_forked_child_that_returns_into_the_worker_exits_there(
    tmp_path: Path, pids_file: Path
) -> None:
    modules = tmp_path / "mods"
    modules.mkdir()
    (modules / "chaos_forker.py").write_text(FORKER)
    env = guarded_env(
        SPOOL_HANDLERS="chaos_forker",
        SPOOL_STORE_URL=f"sqlite:///{tmp_path}/spool.db",
        PYTHONPATH=os.pathsep.join([str(ROOT), str(modules)]),
    )

    def spool(*args: str) -> str:
        with (tmp_path / "out.txt").open("w") as out, (tmp_path / "err.txt").open("w") as err:
            done = subprocess.run(
                [sys.executable, "-m", "local.cli", *args],
                cwd=tmp_path, env=env, stdout=out, stderr=err, timeout=90,
            )  # fmt: skip
        assert done.returncode == 0, (tmp_path / "err.txt").read_text()[-3000:]
        return (tmp_path / "out.txt").read_text()

    jobs = {}
    for how in ("return", "exit", "raise"):
        payload = json.dumps({"how": how, "pids": str(pids_file)})
        jobs[how] = spool("enqueue", "forker", "--payload", payload).split()[0]
    spool("worker", "--burst", "--quiet", "--concurrency", "3")

    children = [int(line) for line in pids_file.read_text().split()]
    assert len(children) == 3, children  # one child per job: none ran a job again
    assert not [pid for pid in children if _alive(pid)]
    expected = {"return": 0, "exit": 3, "raise": 1}
    for how, job in jobs.items():
        shown = json.loads(spool("jobs", "--json"))
        [found] = [j for j in shown["jobs"] if j["id"] == job]
        assert found["state"] == "succeeded", (how, found)
        assert found["result"] == {"child_exit": expected[how]}, (how, found)

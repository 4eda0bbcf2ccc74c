"""`spool top`: one frame rendered to text, a bounded live run, and the command itself."""

from __future__ import annotations

import io
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

from chalicelib.clock import FakeClock
from chalicelib.models import Completion, JobState
from chalicelib.storage.memory import MemoryStore
from chalicelib.ui.views import overview
from local.top import CLEAR, frames, render, spark
from tests.factories import new_job
from tests.procs import guarded_env

ROOT = Path(__file__).resolve().parents[1]


def test_spark_scales_to_the_busiest_minute() -> None:
    assert spark([[0, 0]] * 4) == "    "
    assert spark([[0, 0], [1, 0], [4, 4], [0, 8]]) == " ▁██"
    assert spark([[2, 0], [4, 0]]) == "▄█"


def test_one_frame_shows_each_queue_by_state() -> None:
    clock = FakeClock()
    store = MemoryStore(clock)
    old = clock.now() - timedelta(seconds=75)
    store.add([new_job(clock, queue="mail", run_at=old) for _ in range(2)])
    store.add([new_job(clock, queue="img", max_attempts=1)])
    [job] = store.claim(1, 30, queues=["img"])
    store.finish([Completion(job.id, job.lease_token, JobState.DEAD, error="x")])
    store.beat("w:1", None, clock.now())
    text = render(overview(store, None, 60))
    lines = text.splitlines()
    assert lines[0].endswith("1 live worker")
    assert lines[1] == "queued 2   running 0   retrying 0   succeeded 0   dead 1   cancelled 0"
    header = lines[3].split()
    assert header[:8] == [
        "queue",
        "queued",
        "running",
        "retrying",
        "succeeded",
        "dead",
        "cancelled",
        "oldest",
    ]
    rows = {line.split()[0]: line.split() for line in lines[5:]}
    assert rows["mail"][1:4] == ["2", "0", "0"] and rows["mail"][7] == "75s"
    assert rows["img"][5] == "1" and rows["img"][7] == "-"
    assert rows["img"][-3:-1] == ["0", "1"] and rows["img"][-1] == "█"  # failed this minute
    assert render(overview(MemoryStore(clock), "nobody", 60)).splitlines()[-1] == "no jobs yet"


def test_a_bounded_run_redraws_with_what_changed() -> None:
    clock = FakeClock()
    store = MemoryStore(clock)
    out = io.StringIO()
    naps: list[float] = []

    def nap(seconds: float) -> None:  # between frames, the queue moves
        naps.append(seconds)
        store.add([new_job(clock, queue="q", tenant="t")])

    drawn = frames(store, "t", 60, 1.5, 3, out, clear=True, sleep=nap)
    assert drawn == 3 and naps == [1.5, 1.5]
    shown = out.getvalue().split(CLEAR)[1:]
    assert len(shown) == 3
    assert [s.splitlines()[1].split()[1] for s in shown] == ["0", "1", "2"]  # queued n


def test_spool_top_runs_against_a_store(tmp_path: Path) -> None:
    env = guarded_env(SPOOL_STORE_URL=f"sqlite:///{tmp_path}/top.db", SPOOL_DEMO_HANDLERS="true")
    spool = [sys.executable, "-m", "local.cli"]
    subprocess.run(
        [*spool, "enqueue", "echo", "--queue", "mail"],
        env=env,
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    done = subprocess.run(
        [*spool, "top", "--iterations", "2", "--interval", "0.1"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("spool top") == 2 and CLEAR not in done.stdout  # not a tty
    assert any(line.split()[:2] == ["mail", "1"] for line in done.stdout.splitlines())

"""`spool top`: one frame rendered to text, a bounded live run, and the command itself."""

from __future__ import annotations

import io
import subprocess
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from chalicelib.clock import FakeClock
from chalicelib.models import Completion, JobState
from chalicelib.storage import open_store
from chalicelib.storage.memory import MemoryStore
from chalicelib.ui.views import overview
from local.top import CLEAR, frames, render, spark
from tests.factories import new_job, token
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
    store.finish([Completion(job.id, token(job), JobState.DEAD, error="x")])
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


@pytest.mark.parametrize(
    "argv",
    [
        ["--interval", "inf"],
        ["--interval", "1e308"],
        ["--interval", "nan"],
        ["--interval", "-1"],
        ["--interval", "0"],
        ["--interval", "abc"],
        ["--iterations", "-1"],
        ["-n", "1e3"],
        ["--tenant", ""],
        ["--tenant", "two words"],
        ["--tenant", "x" * 65],
    ],
)
def test_bad_arguments_are_usage_errors_that_say_what_is_wanted(
    argv: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    """Before: inf crashed the sleep ("unexpected error: OverflowError") after a frame,
    -1 and nan quietly became 0.1, and an empty tenant showed "no jobs yet"."""
    from local.cli import main

    monkeypatch.setenv("SPOOL_STORE_URL", f"sqlite:///{tmp_path}/top.db")
    assert main(["top", *argv]) == 2
    err = capsys.readouterr().err
    assert "spool top --help" in err and "unexpected" not in err
    assert any(word in err for word in ("seconds from 0.1 to 3600", "0 or more", "tenant name"))
    assert not (tmp_path / "top.db").exists()  # refused before any store was opened


def test_a_live_run_outlasts_a_store_that_goes_away(tmp_path: Path) -> None:
    """A real redis-server killed between frames, then started again on its port:
    the frame in between says the store is unavailable, and the run goes on."""
    from chalicelib.storage import open_store
    from tests.redis_support import private_server

    with private_server(tmp_path / "redis", appendfsync="no") as server:
        store = open_store(server.url)
        store.add([new_job(store.clock, queue="mail")])
        out = io.StringIO()
        naps: list[float] = []

        def nap(seconds: float) -> None:
            naps.append(seconds)
            if len(naps) == 1:
                server.kill()
            else:
                server.start()

        try:
            drawn = frames(store, None, 60, 0.5, 3, out, clear=True, sleep=nap)
        finally:
            store.close()
    shown = out.getvalue().split(CLEAR)[1:]
    assert drawn == 3 and len(shown) == 3
    assert any(line.startswith("mail") for line in shown[0].splitlines())
    assert shown[1].startswith("spool top   store unavailable: ") and "Ctrl-C" in shown[1]
    assert shown[2].splitlines()[-1] == "no jobs yet"  # back, empty (nothing was persisted)


def test_a_single_frame_still_fails_when_the_store_is_gone(tmp_path: Path) -> None:
    from chalicelib.errors import StoreUnavailable
    from chalicelib.storage import open_store
    from tests.redis_support import private_server

    with private_server(tmp_path / "redis", appendfsync="no") as server:
        store = open_store(server.url)
        server.kill()
        try:
            with pytest.raises(StoreUnavailable):
                frames(store, None, 60, 0.5, 1, io.StringIO(), clear=False)
        finally:
            store.close()


def test_a_frame_says_when_it_lists_only_the_busiest_queues() -> None:
    clock = FakeClock()
    store = MemoryStore(clock)
    store.add([new_job(clock, queue=f"q{n}") for n in range(5)])
    store.add([new_job(clock, queue="q9") for _ in range(3)])
    lines = render(overview(store, None, 60, shown=2)).splitlines()
    assert lines[2] == "the 2 busiest of 6 queues"
    assert lines[1].startswith("queued 8 ")  # the totals count every queue
    assert [line.split()[0] for line in lines[6:]] == ["q0", "q9"]


def test_a_reader_that_stops_early_is_not_an_error(tmp_path: Path) -> None:
    """`spool top | head -2`: before, "unexpected error: BrokenPipeError" and exit 1."""
    env = guarded_env(SPOOL_STORE_URL=f"sqlite:///{tmp_path}/top.db")
    open_store(f"sqlite:///{tmp_path}/top.db").close()  # top shows a store that exists
    proc = subprocess.Popen(
        [sys.executable, "-m", "local.cli", "top", "-n", "200", "--interval", "0.1"],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stderr is not None
    assert proc.stdout.readline().startswith("spool top")
    proc.stdout.close()  # what head does after its lines
    try:
        code = proc.wait(60)
    finally:
        proc.kill()
    err = proc.stderr.read()
    assert code == 0 and err == "", err

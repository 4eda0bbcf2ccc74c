"""local/shared_metrics.py: the files `spool serve --processes N` shares metrics by."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest

from local import shared_metrics

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def tmp_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    return tmp_path


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_a_killed_supervisor_s_directory_is_swept_at_the_next_start(tmp_root: Path) -> None:
    """kill -9 leaves the directory behind (nothing runs to remove it): the next
    supervisor removes those whose owner is gone, and only those."""
    orphan = tmp_root / f"{shared_metrics.PREFIX}orphan"
    orphan.mkdir()
    (orphan / shared_metrics.OWNER).write_text("box:1:abcdef")  # no process locks it
    (orphan / "worker.prom").write_text("")
    living = tmp_root / f"{shared_metrics.PREFIX}living"
    living.mkdir()
    owner = shared_metrics._own(living)  # locked, as a running supervisor's
    unowned = tmp_root / f"{shared_metrics.PREFIX}unowned"  # not (yet) marked: left alone
    unowned.mkdir()

    try:
        shared_metrics.sweep_orphans()
    finally:
        os.close(owner)

    assert not orphan.exists()
    assert living.exists() and unowned.exists()


# A supervisor in a child process, with os.getpid faked: argv[1] the temporary root,
# argv[2] the pid it believes it has. It prints its directory, then runs until its
# standard input closes, and ends without cleaning up (as kill -9 would).
SUPERVISOR = """
import os, sys, tempfile
os.getpid = lambda: int(sys.argv[2])
tempfile.tempdir = sys.argv[1]
from local import shared_metrics
shared = shared_metrics.SharedMetrics(None, worker=False)
print(shared.directory, flush=True)
sys.stdin.read()
os._exit(0)
"""


def _supervisor(root: Path, pid: int) -> tuple[subprocess.Popen[str], Path]:
    child = subprocess.Popen(
        [sys.executable, "-c", SUPERVISOR, str(root), str(pid)],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None
    return child, Path(child.stdout.readline().strip())


def _end(child: subprocess.Popen[str]) -> None:
    assert child.stdin is not None
    child.stdin.close()
    assert child.wait(60) == 0


def test_a_live_supervisor_whose_pid_is_not_seen_here_keeps_its_directory(
    tmp_root: Path,
) -> None:
    """Two containers sharing a temporary volume each have their own pids: the other's
    supervisor's pid is dead (or another process) here. Was: its live directory was
    removed by this side's sweep, and its server processes lost their shared files."""
    child, directory = _supervisor(tmp_root, _dead_pid())
    try:
        shared_metrics.sweep_orphans()
        assert directory.is_dir()
    finally:
        _end(child)
    shared_metrics.sweep_orphans()  # gone now, without cleaning up: swept
    assert not directory.exists()


def test_a_dead_supervisor_whose_pid_was_given_again_is_swept(tmp_root: Path) -> None:
    """Was: a directory was kept while any process had its owner's pid, so one left by
    a killed supervisor whose pid went to another process was never removed."""
    child, directory = _supervisor(tmp_root, os.getpid())  # the pid of a live process
    _end(child)
    assert directory.is_dir()
    shared_metrics.sweep_orphans()
    assert not directory.exists()


# -- the cache counts of server processes that are gone -----------------------------

LIVE = {11: (10, 1), 12: (20, 2)}  # pid: (hits, misses) as last written
TOTAL = (30, 3)


def _name(pid: int, tag: str = "a1b2c3") -> str:
    """A server process's file: its pid and the tag of its start (worker_id.process_tag)."""
    return f"cache-{pid}-{tag}.counts"


def _counts_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "shared"
    directory.mkdir(parents=True, exist_ok=True)
    for pid, (hits, misses) in LIVE.items():
        (directory / _name(pid)).write_text(f"{hits} {misses}", "ascii")
    return directory


def test_a_dead_process_s_counts_are_folded_into_one_file_and_the_sum_kept(
    tmp_path: Path,
) -> None:
    """Was: every replaced server process left its file for every scrape to read, for
    as long as the supervisor ran. Now the supervisor folds it into one retired total."""
    from chalicelib.api.metrics import retire_cache_counts, shared_cache_counts

    directory = _counts_dir(tmp_path)
    (directory / (_name(11) + ".part")).write_text("99", "ascii")  # killed mid-write
    retire_cache_counts(directory, 11)
    assert shared_cache_counts(directory) == TOTAL
    # Process after process exits and is replaced: one file a live process, plus one.
    for pid in range(100, 110):
        (directory / _name(pid)).write_text("1 1", "ascii")
        retire_cache_counts(directory, pid)
        assert shared_cache_counts(directory) == (TOTAL[0] + pid - 99, TOTAL[1] + pid - 99)
    assert sorted(p.name for p in directory.iterdir()) == [_name(12), "retired.counts"]
    retire_cache_counts(directory, 4242)  # one that exited before its first write
    assert shared_cache_counts(directory) == (TOTAL[0] + 10, TOTAL[1] + 10)
    # A new process given a retired one's pid is counted (the pids wrap around).
    (directory / _name(11, "d4e5f6")).write_text("5 5", "ascii")
    assert shared_cache_counts(directory) == (TOTAL[0] + 15, TOTAL[1] + 15)


def test_shared_metrics_folds_a_reaped_process_s_file(
    tmp_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from chalicelib.runtime import build_runtime

    # Its own store: the default (sqlite:///.spool/spool.db, relative) would be a file
    # in the checkout, shared with every other run and parallel worker.
    monkeypatch.setenv("SPOOL_STORE_URL", f"sqlite:///{tmp_root}/spool.db")
    with shared_metrics.SharedMetrics(build_runtime(), worker=False) as shared:
        (shared.directory / _name(11)).write_text("3 4", "ascii")
        shared.retire(11)
        assert not (shared.directory / _name(11)).exists()
        assert (shared.directory / "retired.counts").exists()


def _folding_before_read(nth: int) -> Any:
    """Path.read_text, folding pid 11's file (whole) before the nth read."""
    from chalicelib.api import metrics

    real_read = Path.read_text
    reads = [0]

    def read_text(path: Path, *args: Any, **kwargs: Any) -> str:
        reads[0] += 1
        if reads[0] == nth:
            Path.read_text = real_read  # type: ignore[method-assign]  # the fold's own
            try:
                metrics.retire_cache_counts(path.parent, 11)
            finally:
                # mypy takes a function set on a class for one taking self twice.
                Path.read_text = read_text  # type: ignore[method-assign, assignment]
        return real_read(path, *args, **kwargs)

    return read_text


def test_a_scrape_overlapping_a_fold_counts_every_file_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """However the fold's steps and a scrape's reads interleave, the scrape reads the
    same sum: never the dead process's counts twice, never not at all."""
    from chalicelib.api import metrics

    seen = []
    # A fold at each point of a scrape: before its k-th read (the total, two files, the
    # total again).
    for k in range(4):
        directory = _counts_dir(tmp_path / f"scrape-{k}")
        monkeypatch.setattr(Path, "read_text", _folding_before_read(k + 1))
        seen.append(metrics.shared_cache_counts(directory))
        monkeypatch.undo()
        assert not (directory / _name(11)).exists()  # the fold did happen

    # A scrape, whole, at each point of a fold: before and after each rename and removal.
    directory = _counts_dir(tmp_path / "fold")
    real_replace, real_unlink = os.replace, Path.unlink

    def scrape_around(step: Any) -> Any:
        def run(*args: Any, **kwargs: Any) -> Any:
            seen.append(metrics.shared_cache_counts(directory))
            result = step(*args, **kwargs)
            seen.append(metrics.shared_cache_counts(directory))
            return result

        return run

    monkeypatch.setattr("chalicelib.api.metrics.os.replace", scrape_around(real_replace))
    monkeypatch.setattr(Path, "unlink", scrape_around(real_unlink))
    metrics.retire_cache_counts(directory, 11)
    assert len(seen) == 4 + 6  # the fold renames twice and removes one file: a scrape around each
    assert set(seen) == {TOTAL}


# A server process in a child process, with os.getpid faked: it writes its cache counts
# (argv[3] hits, argv[4] misses) to the shared directory argv[1] as process argv[2].
SERVER = """
import os, sys
os.getpid = lambda: int(sys.argv[2])
from pathlib import Path
from types import SimpleNamespace
from chalicelib.api.metrics import Metrics
from chalicelib.config import Settings
from chalicelib.storage.memory import MemoryStore
metrics = Metrics(MemoryStore(), Settings())
metrics.cache = SimpleNamespace(hits=int(sys.argv[3]), misses=int(sys.argv[4]))
metrics.write_cache_counts(Path(sys.argv[1]))
"""


def _server_writes(directory: Path, pid: int, hits: int, misses: int) -> None:
    args = [str(directory), str(pid), str(hits), str(misses)]
    done = subprocess.run(
        [sys.executable, "-c", SERVER, *args], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr


def test_a_server_process_given_a_dead_one_s_pid_keeps_both_counts(tmp_path: Path) -> None:
    """A fold that failed (an unreadable total) leaves the exited process's file, to be
    counted. Was: files were named by pid alone, so a process later given the same pid
    wrote over it: the dead process's counts vanished and the sum fell (a counter reset
    to Prometheus)."""
    from chalicelib.api.metrics import retire_cache_counts, shared_cache_counts

    directory = tmp_path / "shared"
    directory.mkdir()
    _server_writes(directory, 7, 3, 4)
    (directory / "retired.counts").mkdir()  # unreadable: the fold fails, the file stays
    with pytest.raises(OSError):
        retire_cache_counts(directory, 7)
    (directory / "retired.counts").rmdir()
    _server_writes(directory, 7, 1, 1)  # the pids wrapped around to 7 again
    assert shared_cache_counts(directory) == (4, 5)
    retire_cache_counts(directory, 7)  # that one exits too: both are folded
    assert shared_cache_counts(directory) == (4, 5)
    assert [p.name for p in directory.iterdir()] == ["retired.counts"]

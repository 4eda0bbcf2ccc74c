"""The crash test: real worker processes, SIGKILLed and restarted, lose nothing.

Also shows the checker catches what it must (lost, stuck and over-duplicated jobs),
so a passing crash test means something.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from tests.crash_harness import (
    CrashRun,
    Progress,
    check_crash,
    duplicates,
    record_dir_of,
    run_crash,
    working_slots,
)


# One at a time on parallel workers: see "heavy" in docs/testing.md.
@pytest.mark.xdist_group("heavy")
@pytest.mark.slow
@pytest.mark.timeout(600)
def test_sigkilled_workers_lose_nothing_on_sqlite(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'crash.db'}"
    # The drain's time is its machine's: parallel test workers share the cores. A run
    # ends when it stalls (tests/crash_harness.py), and kills land only on working
    # workers; the time limit is a backstop inside the test's timeout.
    run = run_crash(
        url,
        tmp_path,
        jobs=5_000,
        workers=4,
        kill_every=0.25,
        jobs_per_kill=50,
        work=0.001,
        time_limit=480,
    )
    assert run.kills >= 3, f"too few kills to mean anything ({run.kills} in {run.seconds:.1f}s)"
    assert len(run.states) == 5_000
    problems = check_crash(run)
    assert not problems, "\n".join(problems)
    print(f"\n{run.kills} kills, {duplicates(run)} duplicate executions, {run.seconds:.1f}s")


# -- the checker itself --------------------------------------------------------


def good_run() -> CrashRun:
    ids = [f"j_{i:032x}" for i in range(6)]
    executions = Counter(ids)
    executions[ids[0]] += 1  # one re-run after a kill
    return CrashRun(
        job_ids=ids, kills=1, executions=executions, states=dict.fromkeys(ids, "succeeded")
    )


def test_checker_passes_a_clean_run() -> None:
    assert check_crash(good_run()) == []


def test_checker_catches_a_lost_job() -> None:
    run = good_run()
    del run.states[run.job_ids[3]]
    [problem] = check_crash(run)
    assert "1 job(s) lost" in problem


def test_checker_catches_a_stuck_job() -> None:
    run = good_run()
    run.states[run.job_ids[2]] = "running"
    run.states[run.job_ids[4]] = "dead"
    [problem] = check_crash(run)
    assert "2 job(s) not succeeded" in problem and "running" in problem


def test_checker_catches_excess_duplicates() -> None:
    run = good_run()
    run.executions[run.job_ids[1]] += 1  # two duplicates, one kill
    [problem] = check_crash(run)
    assert "2 duplicate execution(s), more than the 1 kill(s)" in problem


def test_checker_catches_a_job_that_succeeded_without_running() -> None:
    run = good_run()
    del run.executions[run.job_ids[5]]
    assert any("without running" in p for p in check_crash(run))


def test_checker_catches_workers_that_died_on_their_own() -> None:
    run = good_run()
    run.unexpected_exits.append(1)
    assert any("exited on their own" in p for p in check_crash(run))


def test_checker_catches_counts_that_disagree_with_the_rows() -> None:
    run = good_run()
    run.counts = {"succeeded": 5, "queued": 1}  # the rows say 6 succeeded
    assert any("per-state counts" in p for p in check_crash(run))
    run.counts = {"succeeded": 6}
    assert check_crash(run) == []


def test_a_run_that_stalls_says_so_beside_what_it_left() -> None:
    run = good_run()
    run.states[run.job_ids[2]] = "queued"
    run.stalled = "stalled: no job succeeded for 60 s at 5/6"
    assert check_crash(run)[-1] == run.stalled


def test_progress_lets_a_slow_run_go_on_and_ends_a_stalled_one() -> None:
    progress = Progress(stall_limit=60)
    # One more job every 50 s is slow, never stalled, however long it goes on.
    assert not any(progress.stalled(done, now=50.0 * done) for done in range(100))
    assert not progress.stalled(99, now=50.0 * 99 + 60)
    assert progress.stalled(99, now=50.0 * 99 + 61)


def test_kills_land_only_on_workers_that_have_run_a_job(tmp_path: Path) -> None:
    folders = [record_dir_of(tmp_path, slot, 0) for slot in range(4)]
    for folder in folders:
        folder.mkdir()
    (folders[0] / "executions-101.log").write_text("j_1\n")
    (folders[2] / "executions-103.log").write_text("")  # opened, nothing run yet
    (folders[3] / "executions-104.log").write_text("j_2\n")
    assert working_slots(folders) == [0, 3]
    assert working_slots(folders[1:3]) == []


def test_a_worker_restarted_on_its_predecessors_pid_is_not_taken_for_a_working_one(
    tmp_path: Path,
) -> None:
    """Slot 0's first worker (pid 101) ran a job and was killed; its successor, still
    importing, was given pid 101 again (pids are reused). Keyed by pid, the harness
    read the predecessor's record as the successor's (red before)."""
    first, second = record_dir_of(tmp_path, 0, 0), record_dir_of(tmp_path, 0, 1)
    first.mkdir()
    second.mkdir()
    (first / "executions-101.log").write_text("j_1\n")
    assert working_slots([second]) == []
    assert working_slots([first]) == [0]

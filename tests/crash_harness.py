"""Kill workers at random and prove nothing is lost: the crash harness.

`run_crash(store_url, ...)` enqueues N jobs into the store at `store_url`,
starts several real `spool worker` processes (concurrency 1, --sync-finish,
short leases), SIGKILLs one every `kill_every` seconds and restarts it, until
every job has succeeded or no job has succeeded for `stall_limit` seconds (or,
as a backstop, `time_limit` passes); then stops the survivors with SIGTERM and
reads back each job's final state, the store's per-state counts and how many
times each handler actually ran (tests/crash_handlers.py records every
execution). `check_crash(run)` lists what went wrong. Parameterized on the
store URL so every backend that workers can share (SQLite, Postgres, Redis)
runs the same test.

Why kills follow the work, not only the clock: on a loaded machine (2 cores, 3
test workers, other suites beside) a restarted worker spends seconds importing,
and killing one every 0.5 s then mostly killed workers that held nothing while
the work crawled: the Postgres run left 2,046 of 10,000 jobs queued at its 300 s
limit (and 5,633 at 480 s with kills limited to working workers alone: 363
restarts, about 12 jobs each). So a kill lands only on a worker that has run a
job since it started (one still importing holds nothing to lose), and only once
`jobs_per_kill` more jobs have succeeded since the last kill: at most one kill
every `kill_every` seconds on a fast machine, as before, and never more kills
than the work can carry on a slow one. Why a stall, not a clock, ends a failing
run: a lost or stuck job shows as no progress once the rest is done, however
slow the machine; a slow but healthy run is not a failure.

The crash tests run 5,000 jobs with a kill at most every 0.25 s and 50 jobs: the
same most kills (jobs / jobs_per_kill = 100) and about as many as 10,000 jobs at
0.5 s and 100 gave alone (SQLite 30 kills for 33, Redis 53 for 57, Postgres 70 for
64), in half the jobs: the kills are the crash points a run samples, the jobs only
the work between them. SQLite ran in 11 s instead of 19, Redis 27 instead of 39,
Postgres 50 instead of 60 (alone, a 2-core machine, stop 46).
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from chalicelib.models import JobQuery, JobState
from chalicelib.storage import open_store
from tests.crash_handlers import CRASH_JOB_TYPE, RECORD_DIR_ENV

REPO = Path(__file__).resolve().parent.parent


@dataclass
class CrashRun:
    job_ids: list[str]
    kills: int
    executions: Counter[str]
    states: dict[str, str]  # job id -> final state, for every job the store still has
    # exit codes of workers that stopped without being killed (or not cleanly on SIGTERM)
    unexpected_exits: list[int] = field(default_factory=list)
    seconds: float = 0.0
    worker_errors: list[str] = field(default_factory=list)  # tracebacks from worker logs
    # the store's own per-state counts at the end (what /metrics and the dashboard show)
    counts: dict[str, int] | None = None
    stalled: str = ""  # why the run ended before every job succeeded, if it did


def check_crash(run: CrashRun) -> list[str]:
    """Every problem found; an empty list means the run passed."""
    problems: list[str] = []
    enqueued = set(run.job_ids)
    lost = [i for i in run.job_ids if i not in run.states]
    if lost:
        problems.append(f"{len(lost)} job(s) lost, e.g. {lost[:3]}")
    stuck = Counter(s for i, s in run.states.items() if i in enqueued and s != "succeeded")
    if stuck:
        problems.append(f"{sum(stuck.values())} job(s) not succeeded: {dict(stuck)}")
    never_ran = [i for i, s in run.states.items() if s == "succeeded" and not run.executions[i]]
    if never_ran:
        problems.append(f"{len(never_ran)} job(s) succeeded without running, e.g. {never_ran[:3]}")
    strangers = [i for i in run.executions if i not in enqueued]
    if strangers:
        problems.append(f"{len(strangers)} execution(s) of jobs never enqueued")
    duplicates = sum(n - 1 for n in run.executions.values() if n > 1)
    if duplicates > run.kills:
        problems.append(f"{duplicates} duplicate execution(s), more than the {run.kills} kill(s)")
    if run.unexpected_exits:
        problems.append(f"workers exited on their own with codes {run.unexpected_exits}")
    rows = dict(Counter(run.states.values()))
    if run.counts is not None and run.counts != rows:
        problems.append(f"the store's per-state counts {run.counts} are not its rows' {rows}")
    if problems and run.stalled:
        problems.append(run.stalled)
    if problems and run.worker_errors:
        problems.append("worker logs:\n" + "\n---\n".join(run.worker_errors[:3]))
    return problems


def duplicates(run: CrashRun) -> int:
    return sum(n - 1 for n in run.executions.values() if n > 1)


def _enqueue(store_url: str, jobs: int, work: float) -> list[str]:
    from chalicelib.handlers import Registry, registry
    from chalicelib.service import EnqueueRequest, Service

    # A registry of its own: loading tests.crash_handlers into the process-wide one
    # left it there for every later test of the pytest process (tests/isolation.py).
    own = Registry()
    own.register(registry.get(CRASH_JOB_TYPE))  # registered as this module imported it
    store = open_store(store_url)
    try:
        service = Service(store, own)
        ids: list[str] = []
        request = EnqueueRequest(type=CRASH_JOB_TYPE, payload={"work": work}, max_attempts=100)
        for start in range(0, jobs, 500):
            batch = [request] * min(500, jobs - start)
            ids.extend(r.job.id for r in service.enqueue(batch, "default"))
        return ids
    finally:
        store.close()


def _final_states(store_url: str) -> dict[str, str]:
    store = open_store(store_url)
    try:
        states: dict[str, str] = {}
        cursor: str | None = None
        while True:
            page = store.list_jobs(JobQuery(limit=1000, cursor=cursor))
            states.update((j.id, j.state.value) for j in page.jobs)
            if page.next_cursor is None:
                return states
            cursor = page.next_cursor
    finally:
        store.close()


def _state_counts(store_url: str) -> dict[str, int]:
    store = open_store(store_url)
    try:
        totals: Counter[str] = Counter()
        for (_, state), n in store.counts().items():
            totals[state.value] += n
        return {state: n for state, n in totals.items() if n}
    finally:
        store.close()


@dataclass
class Progress:
    """Ends a run that stopped making progress: `stall_limit` seconds without one
    more job succeeded. A slow machine is not a stall; a lost or stuck job is,
    once every other job is done."""

    stall_limit: float
    done: int = -1
    since: float = 0.0

    def stalled(self, done: int, now: float) -> bool:
        if done > self.done:
            self.done, self.since = done, now
            return False
        return now - self.since > self.stall_limit


def record_dir_of(record_dir: Path, slot: int, generation: int) -> Path:
    """The folder one worker process records its executions in: its own, named by the
    slot and the start that made it. Named by pid (executions-PID.log in one folder), a
    restarted worker given its killed predecessor's pid (pids are reused) was taken
    for one that had run a job, and its record and the predecessor's were one file."""
    return record_dir / f"worker-{slot}-{generation}"


def working_slots(records: list[Path]) -> list[int]:
    """The slots whose worker (by its own record folder) has run at least one job: a
    kill there can interrupt work; one still importing holds nothing to lose."""
    return [
        slot
        for slot, folder in enumerate(records)
        if any(path.stat().st_size for path in folder.glob("executions-*.log"))
    ]


def _executions(record_dir: Path) -> Counter[str]:
    """Every execution recorded below record_dir: in one folder per worker (run_crash's,
    record_dir_of), or in record_dir itself (tests that start their own workers)."""
    counts: Counter[str] = Counter()
    for path in record_dir.rglob("executions-*.log"):
        for line in path.read_text().splitlines():
            if line:
                counts[line] += 1
    return counts


def run_crash(
    store_url: str,
    work_dir: Path,
    *,
    jobs: int = 10_000,
    workers: int = 4,
    kill_every: float = 0.5,
    lease_seconds: float = 2.0,
    work: float = 0.0,
    jobs_per_kill: int = 100,
    stall_limit: float = 60.0,
    time_limit: float = 900.0,
    seed: int = 0,
    extra_env: dict[str, str] | None = None,
) -> CrashRun:
    record_dir = work_dir / "records"
    record_dir.mkdir(parents=True, exist_ok=True)
    job_ids = _enqueue(store_url, jobs, work)
    env = {
        **os.environ,
        "SPOOL_STORE_URL": store_url,
        "SPOOL_HANDLERS": "tests.crash_handlers",
        "SPOOL_LEASE_SECONDS": str(lease_seconds),
        "SPOOL_SYNC_FINISH": "1",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
        **(extra_env or {}),
    }
    command = [sys.executable, "-m", "local.cli", "worker", "--concurrency", "1", "--quiet"]
    command.append("--sync-finish")
    logs = work_dir / "worker-logs"
    logs.mkdir(exist_ok=True)

    def start(slot: int, generation: int) -> subprocess.Popen[bytes]:
        records = record_dir_of(record_dir, slot, generation)
        records.mkdir()
        own = {**env, RECORD_DIR_ENV: str(records)}
        log = open(logs / f"worker-{slot}-{generation}.log", "wb")  # noqa: SIM115
        proc = subprocess.Popen(command, cwd=REPO, env=own, stdout=subprocess.DEVNULL, stderr=log)
        log.close()  # the child holds its own descriptor
        return proc

    rng = random.Random(seed)
    procs = [start(slot, 0) for slot in range(workers)]
    generations = [0] * workers
    unexpected: list[int] = []
    kills = 0
    stalled = ""
    started = time.monotonic()
    progress = Progress(stall_limit)
    done_at_kill = 0
    store = open_store(store_url)
    try:
        while True:
            time.sleep(kill_every)
            counts = store.counts()
            done = sum(n for (_, state), n in counts.items() if state is JobState.SUCCEEDED)
            if done >= jobs:
                break
            now = time.monotonic()
            if progress.stalled(done, now):
                stalled = f"stalled: no job succeeded for {stall_limit:.0f} s at {done}/{jobs}"
                break
            if now - started > time_limit:
                stalled = f"time limit: {done}/{jobs} done after {time_limit:.0f} s"
                break
            for slot, proc in enumerate(procs):
                if proc.poll() is not None:  # died without our help: note it, keep going
                    unexpected.append(proc.returncode)
                    generations[slot] += 1
                    procs[slot] = start(slot, generations[slot])
            if done - done_at_kill < jobs_per_kill:
                continue  # too little work done since the last kill
            working = working_slots(
                [record_dir_of(record_dir, n, g) for n, g in enumerate(generations)]
            )
            if not working:
                continue  # every worker is still starting: nothing a kill could lose
            done_at_kill = done
            slot = rng.choice(working)
            procs[slot].send_signal(signal.SIGKILL)
            procs[slot].wait()
            kills += 1
            generations[slot] += 1
            procs[slot] = start(slot, generations[slot])
    finally:
        store.close()
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                code = proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                code = -1
            # -SIGTERM: a worker restarted moments ago was still importing, before its
            # handler was installed; it held no jobs. (Graceful SIGTERM: tests/test_cli.py.)
            if code not in (0, -signal.SIGTERM):
                unexpected.append(code)
    seconds = time.monotonic() - started
    errors = [
        text[text.index("Traceback") :][-3000:]
        for text in (path.read_text(errors="replace") for path in sorted(logs.glob("*.log")))
        if "Traceback" in text
    ]
    return CrashRun(
        job_ids=job_ids,
        kills=kills,
        executions=_executions(record_dir),
        states=_final_states(store_url),
        unexpected_exits=unexpected,
        seconds=seconds,
        worker_errors=errors,
        counts=_state_counts(store_url),
        stalled=stalled,
    )

"""The standalone SQS poller (`python -m local.sqs_poller`, docs/aws.md "Offline, the
same shape") stops as `spool serve` does: SIGHUP (a closed terminal, a dropped ssh
session: the poller is started there with `&`) finishes the batch in hand like
SIGTERM; a first Ctrl-C says it is stopping, a second stops at once (130).

SIGHUP was left to its default: the poller died at once, mid-batch, and the job it
was running stayed `running`, its attempt spent, until its lease lapsed and the next
drain_due (a minute later) handed it out again. A second Ctrl-C was taken as the
first: nothing was said, and the poller still waited for its jobs.
Real processes: moto_server on loopback, the poller, a job of the demo `sleep` type.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from chalicelib.models import Job
from chalicelib.runtime import Runtime
from tests.apikit import installed, settings_for
from tests.moto_proc import MotoServer, moto_server
from tests.procs import ROOT, guarded_env, stop
from tests.sqs_chaos_kit import enqueue

pytestmark = [
    pytest.mark.slow,
    pytest.mark.aws,
    pytest.mark.timeout(180),
    pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals"),
]

JOB_SECONDS = 4


@pytest.fixture
def moto(tmp_path: Path) -> Iterator[MotoServer]:
    with moto_server(tmp_path / "moto.log") as server:  # SIGCONT before its stop
        yield server


@pytest.fixture
def moto_endpoint(moto: MotoServer) -> str:
    return moto.endpoint


@pytest.fixture
def store(tmp_path: Path, moto_endpoint: str) -> Iterator[tuple[str, Runtime]]:
    """The store URL (table, queue, bucket made) and a runtime on it in this process."""
    url = f"dynamodb://sig?queue=sig&bucket=sig-bucket&endpoint={moto_endpoint}&create=1"
    with installed(settings_for(tmp_path, store_url=url)) as rt:
        yield url, rt


def start_poller(url: str, tmp_path: Path) -> subprocess.Popen[str]:
    """The poller as docs/aws.md starts it, its banner read (it polls from then on)."""
    env = guarded_env(PYTHONPATH=str(ROOT), SPOOL_STORE_URL=url, SPOOL_DEMO_HANDLERS="true")
    env.pop("SPOOL_API_KEYS", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "local.sqs_poller", "--no-schedule"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=(tmp_path / "poller.log").open("w"),
        text=True,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().startswith("spool: polling"), "the poller did not start"
    return proc


def job_of(rt: Runtime, job_id: str) -> Job:
    job = rt.store.get(job_id)
    assert job is not None
    return job


def wait_running(rt: Runtime, job_id: str, proc: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 60
    while job_of(rt, job_id).state != "running":
        assert time.monotonic() < deadline, "the job never started"
        assert proc.poll() is None, "the poller exited"
        time.sleep(0.05)


def test_sighup_finishes_the_batch_in_hand(store: tuple[str, Runtime], tmp_path: Path) -> None:
    url, rt = store
    proc = start_poller(url, tmp_path)
    try:
        job_id = enqueue(rt, "sleep", payload={"seconds": JOB_SECONDS})
        wait_running(rt, job_id, proc)
        proc.send_signal(signal.SIGHUP)
        code = proc.wait(JOB_SECONDS + 60)
    finally:
        stop(proc)
    job = job_of(rt, job_id)
    assert code == 0, (tmp_path / "poller.log").read_text()[-2000:]
    assert (job.state, job.attempts, job.result) == ("succeeded", 1, {"slept": JOB_SECONDS})


def test_a_second_ctrl_c_stops_at_once_and_the_first_says_so(
    store: tuple[str, Runtime], tmp_path: Path
) -> None:
    url, rt = store
    proc = start_poller(url, tmp_path)
    try:
        job_id = enqueue(rt, "sleep", payload={"seconds": 60})
        wait_running(rt, job_id, proc)
        proc.send_signal(signal.SIGINT)
        deadline = time.monotonic() + 10
        while "stopping" not in (tmp_path / "poller.log").read_text():
            assert time.monotonic() < deadline, "the first Ctrl-C said nothing"
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        code = proc.wait(10)  # not the job's 60 s
    finally:
        stop(proc)
    assert code == 130


def test_a_stop_is_not_held_up_by_a_queue_that_stopped_answering(
    store: tuple[str, Runtime], moto: MotoServer, tmp_path: Path
) -> None:
    """SQS hung (moto_server stopped with SIGSTOP) while the poller waits on a receive,
    no batch in hand: SIGTERM took 119 s, boto's 20 s read timeout tried five times,
    past a service manager's stop timeout (systemd's 90 s), which then SIGKILLs."""
    url, _ = store
    proc = start_poller(url, tmp_path)
    try:
        moto.process.send_signal(signal.SIGSTOP)
        time.sleep(2)  # a receive is under way (each lasts --wait, 1 s): no event tells
        proc.send_signal(signal.SIGTERM)
        started = time.monotonic()
        code = proc.wait(90)
        took = time.monotonic() - started
    finally:
        moto.process.send_signal(signal.SIGCONT)
        stop(proc)
    assert code == 0
    assert took < 30

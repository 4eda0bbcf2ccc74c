"""A worker that stalls past its lease (SIGSTOP, a frozen VM, a long GC) while another
takes the job and finishes it: what the stale worker reports once it resumes.

The store refuses its outcome (the job is another worker's now), so the job ends once:
one result, one webhook, one `succeeded` in the store's counters. The worker's own
timings must agree: `spool_job_end_to_end_seconds` counts jobs reaching their final
outcome, and the stale worker's refused outcome is no final outcome. It counted it
(observed before the write, whatever the store said), so a sum over the workers read
two finished jobs for one, a `dead` one where the store kept the other worker's
success, and an outcome never written (a store outage until the worker stopped) as
final though the job ran again.

The memory store and FakeClock decide who holds the lease when; the end-to-end test
runs it with real `spool worker` processes on Postgres, SIGSTOP and SIGCONT.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest

from chalicelib.api.metrics import Metrics
from chalicelib.clock import FakeClock
from chalicelib.config import Settings
from chalicelib.errors import PermanentError, StoreUnavailable
from chalicelib.handlers import Registry
from chalicelib.models import Completion, JobState
from chalicelib.storage.memory import MemoryStore
from chalicelib.worker import Worker, WorkerConfig
from tests.procs import guarded_env
from tests.test_metrics import sample
from tests.test_worker import ClaimSpy, FakeMonotonic, add, get

LEASE = 30.0
E2E = "spool_job_end_to_end_seconds_count"
RUN = "spool_job_run_duration_seconds_count"
ROOT = Path(__file__).resolve().parent.parent


def _taken_over(mem: MemoryStore, clock: FakeClock, job_id: str) -> None:
    """What happens while the worker running `job_id` is stopped: its lease lapses,
    another worker claims the job and finishes it."""
    clock.advance(LEASE + 1)
    [again] = mem.claim(10, LEASE, ids=[job_id])
    assert again.lease_token is not None
    assert mem.finish([Completion(again.id, again.lease_token, JobState.SUCCEEDED, {"by": "b"})])


@pytest.mark.parametrize("outcome", ["succeeded", "dead"])
def test_an_outcome_refused_for_a_lost_lease_is_not_a_finished_job(
    mem: MemoryStore, clock: FakeClock, reg: Registry, outcome: str
) -> None:
    @reg.handler("stalls", max_attempts=5)
    def stalls(payload: dict[str, Any], ctx: Any) -> dict[str, str]:
        _taken_over(mem, clock, ctx.job.id)
        if outcome == "dead":
            raise PermanentError("the stale worker's own view")
        return {"by": "a"}

    job = add(mem, clock, "stalls", max_attempts=5)
    metrics = Metrics(mem, Settings())
    worker = Worker(mem, reg, WorkerConfig(concurrency=1, lease_seconds=LEASE),
                    middleware=(metrics.middleware,))  # fmt: skip
    try:
        stats = worker.drain()
    finally:
        worker.close()
    final = get(mem, job.id)
    assert (final.state, final.result, final.attempts) == (JobState.SUCCEEDED, {"by": "b"}, 2)
    assert stats.lost_lease == 1
    text = metrics.exposition().decode()
    labels = {"queue": "default", "type": "stalls"}
    # The attempt ran, and how long it took is real: it stays in the run durations.
    assert sample(text, RUN, outcome=outcome, **labels) == 1
    # But the job did not end here: the other worker's outcome is its final one.
    assert f'{E2E}{{outcome="{outcome}"' not in text


class _Down(ClaimSpy):
    """Every finish fails as an outage, and moves the worker's clock a lease on, so
    the drain lets the outcome go at once."""

    def __init__(self, store: MemoryStore, mono: FakeMonotonic) -> None:
        super().__init__(store)
        self._clock = mono

    def finish(self, completions: Any) -> list[bool]:
        self._clock.advance(LEASE)
        raise StoreUnavailable("the database connection failed; try again shortly")


def test_an_outcome_never_written_is_not_a_finished_job(
    mem: MemoryStore, clock: FakeClock, reg: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    import chalicelib.worker as worker_module

    mono = FakeMonotonic()
    monkeypatch.setattr(worker_module, "time", mono)
    reg.handler("fine")(lambda payload: "ok")
    job = add(mem, clock, "fine")
    metrics = Metrics(mem, Settings())
    worker = Worker(_Down(mem, mono), reg, WorkerConfig(concurrency=1, lease_seconds=LEASE),
                    middleware=(metrics.middleware,))  # fmt: skip
    try:
        stats = worker.drain()
    finally:
        worker.close()
    assert stats.unwritten == 1
    assert get(mem, job.id).state is JobState.RUNNING  # it runs again once its lease lapses
    assert E2E + "{" not in metrics.exposition().decode()


class _ReplyLost(ClaimSpy):
    """The first finish is applied, but its reply is lost (the connection killed
    after the commit): the worker holds it, rewrites it, and the store refuses the
    rewrite, which the worker reads back as written (Worker._written)."""

    def __init__(self, store: MemoryStore) -> None:
        super().__init__(store)
        self.lost = 0

    def finish(self, completions: Any) -> list[bool]:
        applied: list[bool] = self._store.finish(completions)
        if not self.lost:
            self.lost += 1
            raise StoreUnavailable("server closed the connection unexpectedly")
        return applied


def test_an_outcome_whose_reply_was_lost_is_counted_once(
    mem: MemoryStore, clock: FakeClock, reg: Registry
) -> None:
    reg.handler("fine")(lambda payload: "ok")
    job = add(mem, clock, "fine")
    metrics = Metrics(mem, Settings())
    worker = Worker(_ReplyLost(mem), reg, WorkerConfig(concurrency=1, lease_seconds=LEASE),
                    middleware=(metrics.middleware,), rng=random.Random(1))  # fmt: skip
    try:
        stats = worker.drain()
    finally:
        worker.close()
    assert (stats.succeeded, stats.lost_lease) == (1, 0)
    assert get(mem, job.id).state is JobState.SUCCEEDED
    text = metrics.exposition().decode()
    assert sample(text, E2E, queue="default", type="fine", outcome="succeeded") == 1


# -- real worker processes on Postgres, one stopped with SIGSTOP ----------------------

HANDLERS = """
import os, time
from chalicelib.handlers import JobContext, handler

@handler("stale.slow", max_attempts=5, timeout=120)
def slow(payload: dict, ctx: JobContext) -> dict:
    folder = os.environ["STALE_DIR"]
    with open(os.path.join(folder, f"started-{os.getpid()}"), "a") as f:
        f.write(ctx.job.id + "\\n")
    time.sleep(payload["seconds"])
    return {"pid": os.getpid()}
"""


class _Receiver(BaseHTTPRequestHandler):
    bodies: list[dict[str, Any]] = []

    def do_POST(self) -> None:
        length = int(self.headers["Content-Length"])
        type(self).bodies.append(json.loads(self.rfile.read(length)))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[str]:
    _Receiver.bodies = []
    server = HTTPServer(("127.0.0.1", 0), _Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/hook"
    finally:
        server.shutdown()
        server.server_close()


def _until(check: Any, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def _scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
        return str(answer.read().decode())


@contextlib.contextmanager
def _store_url(kind: str) -> Iterator[str]:
    """A fresh store both worker processes share: a Postgres schema or a Redis prefix."""
    if kind == "postgres":
        from tests.pg_support import fresh_schema

        with fresh_schema() as url:
            yield url
    else:
        from tests.redis_support import fresh_prefix

        with fresh_prefix() as url:
            yield url


# Not SQLite: a worker stopped while it holds the turn to write (a beat, a lease
# renewal) stops every other process's writes with it, the other worker's among them.
@pytest.mark.slow
@pytest.mark.timeout(180)
@pytest.mark.parametrize("kind", [pytest.param("postgres", marks=pytest.mark.postgres), "redis"])
def test_a_sigstopped_worker_resumed_after_another_finished_its_job(
    tmp_path: Path, receiver: str, kind: str
) -> None:
    from tests.redis_support import free_port

    (tmp_path / "stale_handlers.py").write_text(HANDLERS)
    runs = tmp_path / "runs"
    runs.mkdir()
    secret = "whsec_" + base64.b64encode(b"k" * 32).decode()
    with _store_url(kind) as url:
        env = guarded_env(
            SPOOL_STORE_URL=url,
            SPOOL_HANDLERS="stale_handlers",
            STALE_DIR=str(runs),
            PYTHONPATH=f"{tmp_path}{os.pathsep}{ROOT}",
            SPOOL_LEASE_SECONDS="2",
            SPOOL_WEBHOOKS=json.dumps({"default": {"url": receiver, "secrets": [secret]}}),
            SPOOL_WEBHOOK_ALLOW_PRIVATE="true",
        )

        def spool(*args: str) -> str:
            done = subprocess.run([sys.executable, "-m", "local.cli", *args], cwd=ROOT, env=env,
                                  capture_output=True, text=True, timeout=60)  # fmt: skip
            assert done.returncode == 0, done.stderr
            return done.stdout

        job_id = json.loads(spool("enqueue", "stale.slow", "--payload", '{"seconds": 3}',
                                  "--json"))["id"]  # fmt: skip

        def status() -> dict[str, Any]:
            answer: dict[str, Any] = json.loads(spool("status", job_id, "--json"))
            return answer

        ports = free_port(), free_port()
        workers: list[subprocess.Popen[bytes]] = []
        logs = [open(tmp_path / f"worker-{n}.log", "wb") for n in range(2)]  # noqa: SIM115
        try:

            def start(n: int) -> subprocess.Popen[bytes]:
                command = [sys.executable, "-m", "local.cli", "worker", "--concurrency", "1",
                           "--metrics-port", str(ports[n])]  # fmt: skip
                proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=logs[n], stderr=logs[n])
                workers.append(proc)
                return proc

            stale = start(0)
            _until(lambda: any(runs.iterdir()), "the first worker to start the job")
            os.kill(stale.pid, signal.SIGSTOP)  # inside the handler's 3 s: its lease lapses
            start(1)
            _until(lambda: status()["state"] == "succeeded", "the second worker to finish it")
            os.kill(stale.pid, signal.SIGCONT)
            # The stale worker's handler ends and its outcome is refused (lease_lost).
            _until(lambda: b"lease_lost" in (tmp_path / "worker-0.log").read_bytes(),
                   "the stale worker's refused outcome")  # fmt: skip
            _until(lambda: len(_Receiver.bodies) >= 1, "the webhook")
            texts = [_scrape(port) for port in ports]
        finally:
            for proc in workers:
                if proc.poll() is None:
                    os.kill(proc.pid, signal.SIGCONT)
                    proc.terminate()
                    proc.wait(20)
            for log in logs:
                log.close()
        final = status()
    assert final["state"] == "succeeded"
    assert final["result"] == {"pid": workers[1].pid}  # the second worker's, not overwritten
    assert final["attempts"] == 2  # the stopped one's attempt was spent: it had started
    assert [a["outcome"] for a in final["attempt_history"]] == ["lease_expired", "succeeded"]
    assert [b["type"] for b in _Receiver.bodies] == ["job.succeeded"]
    labels = {"queue": "default", "type": "stale.slow", "outcome": "succeeded"}
    assert [sample(text, RUN, **labels) for text in texts] == [1, 1]  # both ran it
    # One job finished, once: the stale worker's refused outcome is not a second.
    assert sum(sample(text, E2E, **labels) for text in texts if E2E + "{" in text) == 1
    assert sample(texts[1], "spool_jobs_succeeded_total", queue="default", type="stale.slow") == 1

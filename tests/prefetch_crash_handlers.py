"""Handlers for the prefetch crash test (tests/test_prefetch_crash.py), loaded into
`spool worker` through SPOOL_HANDLERS.

`prefetch.kill` waits (a little) until the jobs it names are claimed into its
worker's prefetch buffer, notes whether they were, and ends the process with
os._exit: the worker dies with those jobs claimed and never started. Every run of
`prefetch.record` appends its job id to a file with one unbuffered os.write, so
the record survives the process."""

from __future__ import annotations

import os
import time

from pydantic import BaseModel, ConfigDict

from chalicelib.handlers import JobContext, handler
from chalicelib.storage import open_store

RECORD_DIR_ENV = "SPOOL_PREFETCH_RECORD_DIR"
KILL_TYPE = "prefetch.kill"
RECORD_TYPE = "prefetch.record"
WARM_TYPE = "prefetch.warm"
WAIT_FOR_CLAIM = 3.0


class KillPayload(BaseModel):
    model_config = ConfigDict(extra="forbid")
    waiting: list[str]  # the jobs that should sit claimed behind this one


def _append(name: str, line: str) -> None:
    path = os.path.join(os.environ[RECORD_DIR_ENV], name)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.write(fd, f"{line}\n".encode())
    finally:
        os.close(fd)


@handler(WARM_TYPE)
def warm(payload: dict[str, object]) -> None:
    """Quick jobs, so the worker learns its handlers are quick and claims ahead."""


@handler(RECORD_TYPE, max_attempts=1)
def record(payload: dict[str, object], ctx: JobContext) -> None:
    _append("executions.log", ctx.job.id)


@handler(KILL_TYPE, payload=KillPayload, max_attempts=2, timeout=30)
def kill(payload: KillPayload, ctx: JobContext) -> None:
    store = open_store(os.environ["SPOOL_STORE_URL"])
    try:
        deadline = time.monotonic() + WAIT_FOR_CLAIM
        states: list[str] = []
        while time.monotonic() < deadline:
            jobs = [store.get(job_id) for job_id in payload.waiting]
            states = [job.state.value if job else "missing" for job in jobs]
            if all(state == "running" for state in states):
                break
            time.sleep(0.02)
    finally:
        store.close()
    _append("kills.log", f"{ctx.job.attempts} {','.join(states)}")
    os._exit(3)

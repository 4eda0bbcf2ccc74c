"""Handlers for the crash test, loaded into `spool worker` through SPOOL_HANDLERS.

Each execution appends the job id to a file of its own process, opened with
O_APPEND and written with one unbuffered os.write, so the record is in the
kernel before the handler returns and survives a SIGKILL of the process.
"""

from __future__ import annotations

import os
import threading
import time

from pydantic import BaseModel, ConfigDict, Field

from chalicelib.handlers import JobContext, handler

RECORD_DIR_ENV = "SPOOL_CRASH_RECORD_DIR"
CRASH_JOB_TYPE = "crash.record"

_fd: int | None = None
_fd_lock = threading.Lock()


class CrashPayload(BaseModel):
    model_config = ConfigDict(extra="forbid")
    work: float = Field(default=0.0, ge=0, le=1)  # seconds of pretend work after recording


def _record_fd() -> int:
    global _fd
    with _fd_lock:
        if _fd is None:
            directory = os.environ[RECORD_DIR_ENV]
            path = os.path.join(directory, f"executions-{os.getpid()}.log")
            _fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        return _fd


@handler(CRASH_JOB_TYPE, payload=CrashPayload, max_attempts=100, backoff=(0.0, 0.05))
def record(payload: CrashPayload, ctx: JobContext) -> None:
    os.write(_record_fd(), f"{ctx.job.id}\n".encode())
    if payload.work:
        time.sleep(payload.work)

"""Handlers for the limit tests, loaded into `spool worker` through SPOOL_HANDLERS.

Each attempt appends "start <t>" and "end <t>" (time.time()) to a file of its own
process with one O_APPEND write each, so the test can rebuild how many attempts
of the type ran at once across every process.
"""

from __future__ import annotations

import os
import time

from pydantic import BaseModel, Field

from chalicelib.handlers import handler
from tests.limit_log import LIMITED_TYPE, LOG_DIR_ENV


class SlowPayload(BaseModel):
    seconds: float = Field(default=0.05, ge=0, le=2)


def _note(what: str) -> None:
    path = os.path.join(os.environ[LOG_DIR_ENV], f"attempts-{os.getpid()}.log")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.write(fd, f"{what} {time.time():.6f}\n".encode())
    finally:
        os.close(fd)


@handler(LIMITED_TYPE, payload=SlowPayload, concurrency=2, max_attempts=3)
def slow(payload: SlowPayload) -> dict[str, bool]:
    _note("start")
    time.sleep(payload.seconds)
    _note("end")
    return {"ok": True}

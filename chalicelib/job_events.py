"""The worker's job events as log lines: a Middleware (chalicelib/middleware.py).

- `started` (DEBUG: one per attempt doubles the volume of a busy queue), with
  how long the job waited after it was due;
- `succeeded` (INFO), `retrying` (WARNING, with the delay) and `dead` (ERROR),
  each logged once the store has *applied* the completion (after_flush): a
  completion refused because the lease was lost is logged as `lease_lost`
  (WARNING), never as succeeded. They carry the run time, the error, its type,
  where it was raised (the traceback's last frame: the whole traceback is in
  the attempt history, `spool status ID`) and the worker id;
- `lease_expired` (WARNING): a job whose previous attempt's lease expired (its
  worker vanished and a claim reaped it) is seen again when it is claimed, as
  its last_error says so; logged then, for that earlier attempt. A job reaped
  on its last attempt is buried by the store without a worker seeing it: the
  store logs that `dead` line itself (storage/base.py log_buried_by_reap).
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Sequence
from typing import Any

from chalicelib.logs import job_event, jobs_log, together
from chalicelib.middleware import Middleware
from chalicelib.models import Completion, Job, JobState
from chalicelib.storage.base import LEASE_EXPIRED_ERROR

# Outcomes waiting for their flush; a store write that raised never flushes them.
MAX_PENDING = 10_000
_FRAME = re.compile(r'File "(?P<file>[^"]+)", line (?P<line>\d+), in (?P<func>\S+)')
_LEVELS = {
    JobState.SUCCEEDED: logging.INFO,
    JobState.RETRYING: logging.WARNING,
    JobState.DEAD: logging.ERROR,
}


def where(traceback: str | None) -> str | None:
    """The traceback's last frame as `dir/file.py:42 in func`: where the error was raised."""
    if not traceback:
        return None
    frames = list(_FRAME.finditer(traceback))
    if not frames:
        return None
    last = frames[-1]
    path = "/".join(last["file"].replace("\\", "/").split("/")[-2:])
    return f"{path}:{last['line']} in {last['func']}"


def _not_logged(event: str, job_id: str) -> None:
    try:
        logging.getLogger("spool.worker").warning("could not log %s of %s", event, job_id)
    except Exception:
        return  # logging itself is broken: nothing more to do without risking the worker


class JobEvents(Middleware):
    """Logs each attempt's start, and its outcome once the store has applied it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: dict[tuple[str, str], tuple[Job, Completion, float]] = {}

    # Each hook swallows its own failure: a log line must never cost an attempt or a flush.
    def before_attempt(self, job: Job) -> None:
        try:
            self._started(job)
        except Exception:
            _not_logged("started", job.id)

    def after_attempt(self, job: Job, completion: Completion, seconds: float) -> None:
        try:
            self._keep(job, completion, seconds)
        except Exception:
            _not_logged("outcome", job.id)

    def after_flush(self, completions: Sequence[Completion], applied: Sequence[bool]) -> None:
        with together():  # a flush's lines: one write
            for completion, ok in zip(completions, applied, strict=True):
                try:
                    with self._lock:
                        entry = self._pending.pop((completion.job_id, completion.lease_token), None)
                    if entry is not None:
                        self._log(*entry, applied=ok)
                except Exception:
                    _not_logged(completion.state.value, completion.job_id)

    def _started(self, job: Job) -> None:
        if job.last_error == LEASE_EXPIRED_ERROR and job.attempts > 1:
            # Attempt 1 after a redrive may still show the old reason: not this case.
            job_event(
                logging.WARNING,
                "lease_expired",
                job,
                f"job lease_expired: attempt {job.attempts - 1} stopped answering",
                attempt=job.attempts - 1,
                error=LEASE_EXPIRED_ERROR,
            )
        if jobs_log.isEnabledFor(logging.DEBUG):
            waited = None
            if job.started_at is not None:
                waited = round(max(0.0, (job.started_at - job.run_at).total_seconds()) * 1000, 3)
            job_event(logging.DEBUG, "started", job, wait_ms=waited)

    def _keep(self, job: Job, completion: Completion, seconds: float) -> None:
        if not jobs_log.isEnabledFor(logging.ERROR):
            return  # above ERROR (dead) no outcome is ever logged: nothing to keep
        with self._lock:
            if len(self._pending) >= MAX_PENDING:
                self._pending.pop(next(iter(self._pending)))
            self._pending[(completion.job_id, completion.lease_token)] = (job, completion, seconds)

    def _log(self, job: Job, completion: Completion, seconds: float, applied: bool) -> None:
        record = completion.attempt
        fields: dict[str, Any] = {
            "duration_ms": round(seconds * 1000, 3),
            "worker": record.worker if record is not None else None,
        }
        if completion.state is not JobState.SUCCEEDED:
            fields["error"] = completion.error
            fields["error_type"] = record.error_type if record is not None else None
            fields["where"] = where(record.traceback) if record is not None else None
        if not applied:
            job_event(
                logging.WARNING,
                "lease_lost",
                job,
                "job lease_lost: the store refused this attempt's outcome "
                f"({completion.state.value}); another worker may run it again",
                outcome=completion.state.value,
                **fields,
            )
            return
        if completion.state is JobState.RETRYING and completion.retry_at is not None:
            delay = record.next_delay if record is not None else None
            fields["delay_s"] = round(delay, 3) if delay is not None else None
            fields["retry_at"] = completion.retry_at.isoformat()
        job_event(_LEVELS[completion.state], completion.state.value, job, **fields)

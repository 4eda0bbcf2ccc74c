"""A job's states, the default tenant and an attempt's record: what the command line's
options are built from and `spool status` shows, in a module that imports nothing.

chalicelib.models (pydantic) re-exports them; they live here so `spool --help` and
the remote commands (local/remote_cli.py) can build their options and show a job
without loading pydantic and the job models, most of the command line's start-up time.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

DEFAULT_TENANT = "default"


class JobState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    RETRYING = "retrying"
    SUCCEEDED = "succeeded"
    DEAD = "dead"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL_STATES


TERMINAL_STATES = frozenset({JobState.SUCCEEDED, JobState.DEAD, JobState.CANCELLED})


@dataclass(frozen=True)
class Attempt:
    """One recorded run of a job: when, where, and how it ended.

    A store keeps the last few (SPOOL_ATTEMPT_HISTORY) per job, oldest first,
    so a person can tell why a job died, on which attempt and where.
    """

    number: int  # the job's attempt count when it ran (1-based; restarts after a redrive)
    started_at: datetime
    finished_at: datetime
    worker: str  # "host:pid:tag" or "lambda:<aws request id>"
    outcome: str  # one of chalicelib.models.ATTEMPT_OUTCOMES
    error_type: str | None = None
    error: str | None = None
    traceback: str | None = None  # trimmed to a few KiB, its end kept
    next_delay: float | None = None  # seconds until the next try, when retrying
    log_tail: tuple[str, ...] = ()  # the handler's last log lines (failing attempts)

    @property
    def seconds(self) -> float:
        return (self.finished_at - self.started_at).total_seconds()

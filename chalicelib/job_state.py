"""A job's states and the default tenant: the names the command line's options are
built from, in a module that imports nothing.

chalicelib.models (pydantic) re-exports them; they live here so `spool --help` and
the remote commands (local/remote_cli.py) can build their options without loading
pydantic and the job models, most of the command line's start-up time.
"""

from __future__ import annotations

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

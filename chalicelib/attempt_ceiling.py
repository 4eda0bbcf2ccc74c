"""How many attempts a request may ask one job to have (SPOOL_MAX_ATTEMPTS).

Attempts are worker time: a job that fails every time runs max_attempts times. A
client could ask for 100 (retry.MAX_ATTEMPTS, the most a store keeps) on any job
type, so one enqueue, one token of the tenant's enqueue rate, bought 100 runs of a
handler whose author meant it to try 3 times. The operator's ceiling bounds what a
request asks for; a handler's own default above it still stands (the handler's
author chose it, and a client may ask for as many as a job gets without asking).
Service.build keeps it, so every way a job comes in (one enqueue, a batch, the
Python client and `spool enqueue` through either, a schedule's tick) is refused
alike, with a 422 that names the ceiling and the setting.
"""

from __future__ import annotations

import reprlib  # 10**400 in a message is not 401 digits long

from chalicelib.config import Settings
from chalicelib.errors import ValidationFailed
from chalicelib.redrive_attempts import RedriveAttempts as RedriveAttempts
from chalicelib.retry import MAX_ATTEMPTS

SETTING = "SPOOL_MAX_ATTEMPTS"
DEFAULT_ATTEMPTS_CEILING = 25


def attempts_ceiling(settings: Settings) -> int:
    """The operator's ceiling: a whole number from 1 to retry.MAX_ATTEMPTS (ConfigError
    otherwise, so a typo is a misconfiguration, never a silent default)."""
    return settings.integer("SPOOL_MAX_ATTEMPTS", DEFAULT_ATTEMPTS_CEILING, 1, MAX_ATTEMPTS)


def attempts_for(asked: int | None, job_type: str, handler_default: int, ceiling: int) -> int:
    """The job's max_attempts: the handler's default unless the request asks for a
    number, which may be at most the larger of the ceiling and that default."""
    if asked is None:
        return handler_default
    allowed = max(ceiling, handler_default)
    if asked <= allowed:
        return asked
    why = f"{SETTING} is {ceiling}"
    if handler_default > ceiling:
        why = f"the {job_type!r} handler's own default; {why}"
    raise ValidationFailed(
        f"max_attempts {reprlib.repr(asked)} is more than this server allows: at most "
        f"{allowed} ({why})",
        {"field": "max_attempts", "max": allowed, "setting": SETTING},
    )

"""What a worker writes down about each attempt, and how often it says it is alive.

The worker builds one Attempt per completion (chalicelib/models.py): when it
started and finished (the store's clock), which worker ran it
(chalicelib/worker_id.py), how it ended, the exception's type and message, its
traceback trimmed to SPOOL_TRACEBACK_BYTES (the end kept: the frame that
raised and the message), and how long until the next try. The store appends
it to the job's history in the same write as the completion.

Text is passed through redact_text first: a traceback that quotes a database
URL must not carry its password into the history, the API or the CLI.
"""

from __future__ import annotations

import gc
import os
import sys
import traceback as tb
from collections.abc import Callable, Mapping
from dataclasses import replace
from datetime import datetime
from types import FrameType

from chalicelib import worker_id
from chalicelib.config import Settings
from chalicelib.jsonstrict import is_utf8, replaced_surrogates
from chalicelib.models import (
    UNREADABLE_MESSAGE,
    Attempt,
    Completion,
    JobState,
    error_text,
    error_type_name,
    exception_text,
    within_error_limit,
)
from chalicelib.redact import redact_text
from chalicelib.storage.base import utf8_text

DEFAULT_TRACEBACK_BYTES = 4096
DEFAULT_HEARTBEAT_SECONDS = 15.0
# A worker counts as live (spool_workers_live, the dashboard) while its last beat is at
# most this old: read by every process that reports workers, and by the worker itself,
# whose default beat is a quarter of it (so a shorter window never drops a live worker).
LIVE_SECONDS = "SPOOL_WORKER_LIVE_SECONDS"
DEFAULT_LIVE_SECONDS = 60.0
TRIMMED = "[... {n} bytes trimmed ...]\n"


def _settings(env: Mapping[str, str] | None, *names: str) -> Settings:
    source = os.environ if env is None else env
    return Settings(extra={name: source.get(name, "") for name in names})


def traceback_bytes(env: Mapping[str, str] | None = None) -> int:
    """SPOOL_TRACEBACK_BYTES: how much of a failing attempt's traceback is kept (0: none)."""
    settings = _settings(env, "SPOOL_TRACEBACK_BYTES")
    return int(settings.checked("SPOOL_TRACEBACK_BYTES", DEFAULT_TRACEBACK_BYTES))


def live_seconds(settings: Settings) -> float:
    """SPOOL_WORKER_LIVE_SECONDS: how old a worker's last beat may be for it to count live."""
    return settings.number(LIVE_SECONDS, DEFAULT_LIVE_SECONDS, minimum=1.0, maximum=86400.0)


def heartbeat_seconds(env: Mapping[str, str] | None = None) -> float:
    """SPOOL_HEARTBEAT_SECONDS: how often a running worker records that it is alive.

    Unset, it is 15 s or a quarter of SPOOL_WORKER_LIVE_SECONDS, whichever is less: an
    operator who shortens the live window (to see a dead worker sooner) must not see
    live workers drop out of the count between two beats."""
    settings = _settings(env, LIVE_SECONDS, "SPOOL_HEARTBEAT_SECONDS")
    if settings.text("SPOOL_HEARTBEAT_SECONDS"):
        return settings.checked("SPOOL_HEARTBEAT_SECONDS", DEFAULT_HEARTBEAT_SECONDS)
    return min(DEFAULT_HEARTBEAT_SECONDS, live_seconds(settings) / 4)


def trim_tail(text: str, limit: int) -> str | None:
    """The last `limit` bytes of text (UTF-8), marked where the start was cut; None for 0."""
    if limit <= 0:
        return None
    raw = text.encode("utf-8", "backslashreplace")
    if len(raw) <= limit:
        return text
    marker = TRIMMED.format(n=len(raw))
    keep = max(0, limit - len(marker.encode()))
    return marker + raw[len(raw) - keep :].decode("utf-8", "ignore")


def format_failure(exc: BaseException, limit: int) -> str | None:
    """The exception's traceback (with its causes), its end kept within `limit` bytes."""
    if limit <= 0:
        return None
    # Each part (a frame, the message) cut first: redacting costs ~0.3 s a MiB.
    parts = (within_error_limit(part) for part in tb.format_exception(exc))
    return trim_tail(redact_text("".join(parts)), limit)


def stack_of(thread_id: int | None, limit: int) -> str | None:
    """Where a thread is now: for an attempt that timed out, the line it was stuck on."""
    frame = _frame_of(thread_id) if thread_id is not None else None
    if frame is None or limit <= 0:
        return None
    stack = "".join(tb.format_stack(frame))
    return trim_tail(redact_text("Still running when it timed out:\n" + stack), limit)


def _frame_of(thread_id: int) -> FrameType | None:
    """sys._current_frames() with the cycle collector held off. CPython 3.11 holds its
    thread list's lock while it builds the answer; a collection that starts there and
    frees a threading.local (a store's per-thread connections) asks for the same lock
    and the process hangs for good (seen once in CI, in a worker's timeout)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        return sys._current_frames().get(thread_id)
    finally:
        if was_enabled:
            gc.enable()


def record(
    completion: Completion,
    *,
    number: int,
    started_at: datetime,
    finished_at: datetime,
    failure: BaseException | None,
    traceback_limit: int,
    error_type: str | None = None,
    traceback: str | None = None,
    log_tail: tuple[str, ...] = (),
    told: Callable[[], str] | None = None,
) -> Completion:
    """The completion with its Attempt attached.

    `failure` is what the handler raised, if anything; a failure without one
    (no handler, a result that is not JSON, a timeout) keeps the completion's
    error and the `error_type` and `traceback` given here. With `told` (the job's
    payload as text), configured secrets in the error and traceback are masked as
    in the log tail, except those the tenant's own payload holds (no oracle).
    """
    error: str | None = None
    if completion.state is not JobState.SUCCEEDED:
        if failure is not None:
            error_type = error_type_name(failure)
            text = exception_text(failure)  # its __str__ may fail, with anything
            error = (None if text == UNREADABLE_MESSAGE else error_text(text)) or completion.error
            try:
                traceback = format_failure(failure, traceback_limit)
            except Exception:  # traceback's own reading of it failed: none kept
                traceback = None
        else:
            error = completion.error
    else:
        error_type, traceback = None, None
    if told is not None:
        error, traceback = _beside(error, told), _beside(traceback, told)
        completion = replace(completion, error=_beside(completion.error, told))
    # A handler's text (its exception's message, the traceback quoting it, its log
    # lines) may hold a lone surrogate: U+FFFD instead, on every store and answer.
    error, traceback = utf8_text(error), utf8_text(traceback)
    error_type = utf8_text(error_type)
    log_tail = tuple(replaced_surrogates(line) for line in log_tail)
    if completion.error is not None and not is_utf8(completion.error):
        completion = replace(completion, error=utf8_text(completion.error))
    next_delay = None
    if completion.retry_at is not None:
        next_delay = max(0.0, (completion.retry_at - finished_at).total_seconds())
    attempt = Attempt(
        number=number,
        started_at=started_at,
        finished_at=finished_at,
        worker=worker_id.current(),
        outcome=completion.state.value,
        error_type=error_type,
        error=error,
        traceback=traceback,
        next_delay=next_delay,
        # The handler's last lines say what it was doing when it failed; a success
        # keeps none (its history entry stays small).
        log_tail=log_tail if completion.state is not JobState.SUCCEEDED else (),
    )
    return replace(completion, attempt=attempt)


def _beside(text: str | None, told: Callable[[], str]) -> str | None:
    """A handler's exception text goes back to the tenant (status, dashboard, webhook):
    masked by shape already, here also by the configured secrets' values, as the
    handler's log lines are (an exception quoting the SMTP password showed it)."""
    if not text:
        return text
    from chalicelib.log_redact import redactor

    return redactor.text_beside(text, told)

"""What a handler prints becomes its job's log lines, escaped, never Spool's forged.

A handler's `print(payload["text"])` or `sys.stderr.write(...)` reached the worker's
output as it was: a newline in a payload started a line of its own, and the text
after it ("... ERROR spool.jobs: job dead job_id=...") read as a line of Spool's.
While an attempt runs, `install()`'s stand-ins for sys.stdout and sys.stderr hand
each whole line the attempt's thread writes to its job's logger (`ctx.log`,
spool.handler): stdout's at INFO, stderr's at WARNING, with the job's id, type,
tenant and `stream=stdout|stderr`, escaped like every line (docs/operations.md#logs),
masked, and kept in a failing attempt's `log_tail` as `ctx.log`'s lines are. A line
left without its newline when the attempt ends is logged then. This is Celery's
redirect_stdouts, per attempt. What any other thread writes (the command line's own
notes and summary, a thread a handler started) goes to the stream as before.

SPOOL_CAPTURE_OUTPUT=false (default true) leaves every write as it was, for a
handler whose output is meant for the terminal as it is. logs.configure installs
the stand-ins where Spool writes to the process's own streams (never under a
harness's capture); std_streams.mend puts one back on the stream it opens again
after a handler closed sys.stdout or sys.stderr.
"""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any, TextIO

from chalicelib.config import Settings

SETTING = "SPOOL_CAPTURE_OUTPUT"
_LEVELS = {"stdout": logging.INFO, "stderr": logging.WARNING}

# Per thread: the running attempt's logger (`ctx.log`), the text written since its
# last newline per stream, and whether a captured line is being logged right now
# (a log handler writing to sys.stderr itself must not be captured again).
_here = threading.local()
_installed: set[str] = set()
_lock = threading.Lock()


class Captured:
    """A stand-in for sys.stdout or sys.stderr: an attempt's thread writes lines to its
    job's log; everything else (every other thread, every attribute) is the stream's."""

    def __init__(self, name: str, inner: TextIO) -> None:
        self._name = name
        self._inner = inner

    def write(self, text: str) -> int:
        ctx = getattr(_here, "ctx", None)
        if ctx is None or getattr(_here, "busy", False):
            return self._inner.write(text)
        if not isinstance(text, str):  # as a text stream says it
            raise TypeError(f"write() argument must be str, not {type(text).__name__}")
        pending: dict[str, str] = _here.pending
        lines = (pending.get(self._name, "") + text).split("\n")
        pending[self._name] = lines.pop()
        for line in lines:
            _log_line(ctx, self._name, line)
        return len(text)

    def writelines(self, lines: Iterable[str]) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        self._inner.flush()  # a partial line waits for its newline or the attempt's end

    def __getattr__(self, name: str) -> Any:  # encoding, fileno, isatty, buffer, closed...
        return getattr(self._inner, name)


def _log_line(ctx: Any, stream: str, line: str) -> None:
    _here.busy = True
    try:
        ctx.log.log(_LEVELS[stream], "%s", line, extra={"event": "output", "stream": stream})
    finally:
        _here.busy = False


def install(settings: Settings) -> None:
    """Put the stand-ins on sys.stdout and sys.stderr (once), unless the setting is
    off. A ConfigError names a malformed value."""
    if not settings.flag(SETTING, True):
        return
    with _lock:
        for name in ("stdout", "stderr"):
            current = getattr(sys, name)
            if name in _installed or current is None or isinstance(current, Captured):
                continue
            setattr(sys, name, Captured(name, current))
            _installed.add(name)


def uninstall() -> None:
    """Put the streams back (logs.reset)."""
    with _lock:
        for name in tuple(_installed):
            current = getattr(sys, name)
            if isinstance(current, Captured):
                setattr(sys, name, current._inner)
        _installed.clear()


def wrapped(name: str, stream: TextIO) -> TextIO:
    """`stream`, opened again on the process's descriptor by std_streams.mend, with
    the stand-in around it when one was installed."""
    if name in _installed:
        return Captured(name, stream)  # type: ignore[return-value]
    return stream


@contextmanager
def attempt(ctx: Any) -> Iterator[None]:
    """While the block runs, this thread's writes to sys.stdout and sys.stderr go to
    the attempt's `ctx.log` (made only when a line comes), line by line; a partial
    line is logged at its end. Cheap: two attributes of a thread-local, none when
    nothing is installed."""
    if not _installed:
        yield
        return
    _here.ctx, _here.pending = ctx, {}
    try:
        yield
    finally:
        pending: dict[str, str] = _here.pending
        _here.ctx, _here.pending = None, {}
        for stream, rest in pending.items():
            if rest:
                _log_line(ctx, stream, rest)

"""A handler's forked child that comes back into Spool ends there.

A handler may fork and let the child return or raise instead of ending it with
os._exit. The child is then a copy of the whole worker with one thread, the pool
thread that called the handler: no dispatcher, no flusher, no signal handling that
acts. Going on, that thread took the next job from its copy of the inbox and ran it
again (a second execution nobody records), and the process never ended, ignored
SIGTERM and kept the worker's stdout and stderr open, so a parent waiting for it (or
a pipe reading the worker's output) waited for ever.

`Watch` notes the process before the handler runs; after it, in a process that is
not that one, `leave` ends the child the way `multiprocessing` ends its own: with
os._exit, the status Python would have given (SystemExit's code; 1 and the
traceback for any other exception; 0 for a return), and no cleanup, which would run
the parent's atexit handlers and close its connections from the child.
"""

from __future__ import annotations

import os
import traceback
from typing import NoReturn

from chalicelib import worker_id


class Watch:
    """Around one handler call: `forked()` is True in a child it forked.

    The pid before the call is this process's as worker_id keeps it (read at start and
    in each fork child, no system call per job); the one after is asked of the system,
    so a child forked by C code that runs no fork hooks is caught too."""

    __slots__ = ("pid",)

    def __init__(self) -> None:
        self.pid = worker_id.pid()

    def forked(self) -> bool:
        return os.getpid() != self.pid


def exit_status(exc: BaseException | None) -> int:
    """The status the interpreter would end with, had `exc` reached its top."""
    if exc is None:
        return 0
    if isinstance(exc, SystemExit):
        code = exc.code
        if code is None:
            return 0
        return code if isinstance(code, int) else 1
    return 1


def leave(exc: BaseException | None) -> NoReturn:
    """End a forked child at once, saying why on its stderr when it failed."""
    try:
        if exc is not None and not isinstance(exc, SystemExit):
            text = "".join(traceback.format_exception(exc))
            os.write(2, f"a handler's forked child raised; it exits here:\n{text}".encode())
    finally:
        os._exit(exit_status(exc))

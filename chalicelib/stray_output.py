"""What Python itself writes to stderr, sent through Spool's log instead.

Besides the log lines, a worker's stderr got text no formatter saw: a warning
(`warnings.warn(...)`, `path:6: UserWarning: <message>` and the source line), the
traceback of an exception nobody caught in a thread a handler started, and an
exception Python could not raise (`Exception ignored in: ...`, a `__del__`). Each
holds a handler's text, often a payload's words, written raw: a newline in it forged
a whole `spool.jobs` line under `spool worker` and `spool serve`. `route()` sends
them to logging (`py.warnings`, `spool.thread`, `spool.unraisable`), whose text
formatter writes their message on one line and escapes the exception's own text in a
traceback (chalicelib/log_traceback.py). logs.configure calls it where Spool writes
to the process's own stderr, and where it formats a host's handler (on Lambda each
raw stderr line is a log event of its own: a JSON object in a warning read as
Spool's); `unroute()` puts Python's ways back (logs.reset).
"""

from __future__ import annotations

import logging
import sys
import threading
from typing import Any

_routed: list[tuple[Any, Any]] = []  # (threading.excepthook, sys.unraisablehook) before


def route() -> None:
    """Warnings, uncaught thread exceptions and unraisable ones through logging."""
    if _routed:
        return
    _routed.append((threading.excepthook, sys.unraisablehook))
    logging.captureWarnings(True)
    threading.excepthook = _thread_exception
    sys.unraisablehook = _unraisable


def unroute() -> None:
    if not _routed:
        return
    thread_hook, unraisable_hook = _routed.pop()
    logging.captureWarnings(False)
    threading.excepthook = thread_hook
    sys.unraisablehook = unraisable_hook


def _thread_exception(args: threading.ExceptHookArgs) -> None:
    if args.exc_type is SystemExit:  # as Python's own hook: a thread's sys.exit() is quiet
        return
    name = args.thread.name if args.thread is not None else "<unknown>"
    logging.getLogger("spool.thread").error(
        "exception in thread %s, which nothing caught", name, exc_info=_exc_info(args)
    )


def _unraisable(args: Any) -> None:
    try:
        where = f"{args.err_msg or 'Exception ignored in'}: {args.object!r}"
    except Exception:  # the object's own repr failed
        where = f"{args.err_msg or 'Exception ignored in'}: <object repr() failed>"
    logging.getLogger("spool.unraisable").warning("%s", where, exc_info=_exc_info(args))


def _exc_info(args: Any) -> Any:
    """The hook's exception as logging takes it (None when the hook was given no value)."""
    if args.exc_value is None:
        return None
    return (args.exc_type, args.exc_value, args.exc_traceback)

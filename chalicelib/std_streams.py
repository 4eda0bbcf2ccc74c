"""The process's stdout and stderr, kept for Spool whatever a handler does to them.

Handler code is the user's, and it runs in the worker's process: a handler that
called `sys.stderr.close()`, set `sys.stderr = None` or ran `os.close(2)` took every
later log line of `spool worker` with it (the log handler wrote to sys.stderr, or to
descriptor 2 beneath it), without a word; a descriptor 2 closed this way is the next
one a socket or file gets, so lines could have gone into a connection.

`keep()` (logs.configure, when Spool's own handler writes to the process's real
stderr) takes a copy of descriptors 1 and 2, and Spool's log lines go to the copy of
2 from then on, whatever sys.stderr becomes (a handler's redirect_stderr captures its
own prints, not the operator's log). Under a harness's capture (pytest's), nothing is
kept and the lines go to whatever sys.stderr is, as ever. After each attempt the worker calls
`mend()`: a closed descriptor is given back its file (looked at every FD_LOOK_EVERY
seconds at most), a closed or missing
sys.stdout/sys.stderr is opened again on its descriptor (the CLI's own notes and
summary, a later handler's print), and a WARNING on `spool.worker` says once which
was done and after which job.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import TextIO

from chalicelib import handler_output

log = logging.getLogger("spool.worker")


@dataclass
class _Kept:
    """One of the process's streams: its descriptor, a copy of it, the stream found."""

    name: str  # "stdout" or "stderr"
    fd: int
    copy: int
    found: TextIO  # the sys.<name> keep() found; the one mend() opened after it
    own: TextIO  # a stream on the copy: where Spool's log lines go
    said: set[str] = field(default_factory=set)


_lock = threading.Lock()
_kept: dict[str, _Kept] = {}


def keep() -> bool:
    """Copy descriptors 1 and 2 while sys.stdout and sys.stderr are the process's own
    (a harness's capture has none to copy: nothing is kept, nothing mended). True
    when descriptor 2 is kept: Spool's lines go to the process's own stderr."""
    with _lock:
        for name, fd, original in (("stdout", 1, sys.__stdout__), ("stderr", 2, sys.__stderr__)):
            if name in _kept:
                continue
            stream = getattr(sys, name)
            if stream is not original or stream is None or _fileno(stream) != fd:
                continue
            try:
                copy = os.dup(fd)
            except OSError:
                continue
            own = _text_on(copy, stream, closefd=True)
            _kept[name] = _Kept(name, fd, copy, stream, own)
        return "stderr" in _kept


def forget() -> None:
    """Close the copies (a test's logs.reset): nothing kept, nothing mended."""
    with _lock:
        for kept in _kept.values():
            with contextlib.suppress(OSError, ValueError):
                kept.own.close()
        _kept.clear()


def stderr_for_logs() -> TextIO:
    """Where Spool's log handler writes now: the copy of descriptor 2 once kept (a
    handler's close, None or swap of sys.stderr is the handler's, not the operator's
    log's), else whatever sys.stderr is (a harness's capture)."""
    kept = _kept.get("stderr")
    return sys.stderr if kept is None else kept.own


# Seconds between two looks at descriptors 1 and 2 (an fstat each, ~0.6 us: most of
# what mend cost an attempt). Spool's lines never need the look (they go to the copy);
# what was closed is given back to prints within this long of an attempt's end.
FD_LOOK_EVERY = 0.05
_next_fd_look = 0.0


def mend(job_id: str, job_type: str) -> None:
    """After an attempt: give back what a handler closed, and say so once."""
    global _next_fd_look
    if not _kept:
        return
    now = time.monotonic()
    look = now >= _next_fd_look
    if look:
        _next_fd_look = now + FD_LOOK_EVERY
    for kept in tuple(_kept.values()):
        if look:
            _mend_fd(kept, job_id, job_type)
        _mend_stream(kept, job_id, job_type)


def _mend_fd(kept: _Kept, job_id: str, job_type: str) -> None:
    try:
        os.fstat(kept.fd)
        return
    except OSError:
        pass
    with _lock:
        try:
            os.fstat(kept.fd)
            return  # another thread mended it
        except OSError:
            pass
        try:
            os.dup2(kept.copy, kept.fd)
        except OSError:
            return
    _say(kept, "fd", f"closed file descriptor {kept.fd} (os.close({kept.fd}))", job_id, job_type)


def _mend_stream(kept: _Kept, job_id: str, job_type: str) -> None:
    current = getattr(sys, kept.name)
    if current is not None and not getattr(current, "closed", False):
        return
    with _lock:
        current = getattr(sys, kept.name)
        if current is not None and not getattr(current, "closed", False):
            return
        opened = _text_on(kept.fd, kept.found, closefd=False)
        kept.found = opened
        setattr(sys, kept.name, handler_output.wrapped(kept.name, opened))
    how = f"set sys.{kept.name} to None" if current is None else f"closed sys.{kept.name}"
    _say(kept, "stream", how, job_id, job_type)


def _say(kept: _Kept, what: str, done: str, job_id: str, job_type: str) -> None:
    with _lock:
        if what in kept.said:
            return
        kept.said.add(what)
    lost = (
        "no log line was lost: Spool writes them to its own copy of stderr. "
        if kept.name == "stderr"
        else ""
    )
    log.warning(
        "a handler %s (found after job %s of type %r ran): the worker opened it again; "
        "%sA handler should leave the process's streams open "
        "(contextlib.redirect_%s swaps one for a while)",
        done,
        job_id,
        job_type,
        lost,
        kept.name,
        extra={"event": "stream_mended", "stream": kept.name, "job_id": job_id, "type": job_type},
    )


def _fileno(stream: TextIO) -> int | None:
    try:
        return stream.fileno()
    except (OSError, ValueError, AttributeError):
        return None


def _text_on(fd: int, like: TextIO, *, closefd: bool) -> TextIO:
    """A line-buffered text stream on `fd`, in the encoding of the stream it stands for
    (its characters past that encoding escaped, as Python's own stderr does)."""
    encoding = getattr(like, "encoding", None) or "utf-8"
    return open(
        fd,
        "w",
        buffering=1,
        encoding=encoding,
        errors="backslashreplace",
        closefd=closefd,
    )

"""A traceback for a text log line, with the exception's own text on one line.

A traceback is lines Python writes (`Traceback ...`, `  File ...`, the source) and
text the exception carries: its message, its notes (add_note), a SyntaxError's
source text and file name. That text is often a client's (a payload's words raised
by a handler or an admit check), and a newline in it started a new line of the log:
`ValueError: bad\\n2026-12-06T23:00:00.000Z INFO spool.jobs: job succeeded ...`
forged a whole line under `spool worker`. Here each of those texts, through the
whole chain (cause, context, the members of an exception group), is written with
its line breaks as escapes before the traceback is formatted, so only the lines
Python makes start a line.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable
from types import TracebackType
from typing import Any

ExcInfo = tuple[type[BaseException], BaseException, TracebackType | None]


def told(exc_info: ExcInfo, escape: Callable[[str], str]) -> str:
    """What logging.Formatter.formatException writes for `exc_info` (the last newline
    dropped), with `escape` applied to every text the exceptions carry."""
    _, value, tb = exc_info
    shown = traceback.TracebackException(type(value), value, tb, compact=True)
    _escape_chain(shown, escape)
    return "".join(shown.format()).removesuffix("\n")


def _escape_chain(first: traceback.TracebackException, escape: Callable[[str], str]) -> None:
    seen: set[int] = set()
    waiting: list[Any] = [first]
    while waiting:
        shown = waiting.pop()
        if shown is None or id(shown) in seen:
            continue
        seen.add(id(shown))
        _escape_one(shown, escape)
        waiting.extend((shown.__cause__, shown.__context__))
        waiting.extend(getattr(shown, "exceptions", None) or ())


def _escape_one(shown: traceback.TracebackException, escape: Callable[[str], str]) -> None:
    # `_str` is the message TracebackException keeps (str(exc), made safe) from 3.10
    # on; were it renamed, the other texts are still escaped.
    told_as = getattr(shown, "_str", None)
    if isinstance(told_as, str):
        shown._str = escape(told_as)  # type: ignore[attr-defined]
    for name in ("text", "msg", "filename"):  # a SyntaxError's (None otherwise)
        text = getattr(shown, name, None)
        if isinstance(text, str):  # `text` is a source line, with its own newline
            setattr(shown, name, escape(text.rstrip("\n")))
    notes = getattr(shown, "__notes__", None)
    if isinstance(notes, list | tuple):
        # Python splits each note on "\n" into lines of its own: a note from a client
        # would start a line as a message did.
        shown.__notes__ = [escape(_note_text(note)) for note in notes]  # type: ignore[attr-defined]


def _note_text(note: object) -> str:
    if isinstance(note, str):
        return note
    try:
        return str(note)
    except Exception:
        return "<note str() failed>"

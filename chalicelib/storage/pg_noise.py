"""What a Postgres failure writes to the log: one line, said once, by Spool.

libpq's messages span lines ("server closed the connection unexpectedly\\n\\tThis
probably means ..."), which the log formatter writes as literal \\n and \\t escapes
(chalicelib.logs.one_line): a log line should read as one, psycopg_pool's own
warnings ("error connecting in 'spool': ...") included. And psycopg adds its own
warnings for a call that failed with a lost connection, "error ignored terminating
<psycopg.Pipeline [BAD] at 0x...>: the connection is lost" (twice) and the pool's
"discarding closed connection: <... [BAD] ...>", beside Spool's own line that says
what happened and why; those only repeat it without the reason.

A server that ends a session says why first, in a FATAL message ("terminating
connection due to administrator command": pg_terminate_backend, `pg_ctl stop -m
fast`; "... unexpected postmaster exit"; "... idle-session timeout"). Read while the
connection was idle (the worker's LISTEN connection between wake-ups, a pipeline
between its results), libpq hands that message to the notice handler and raises
only its own "server closed the connection unexpectedly. This probably means the
server terminated abnormally": every pg_terminate_backend or fast shutdown was
logged as a server crash. `hear_last_words` keeps the FATAL, and `reason` says it;
`last_state` tells a session ended idle in its transaction (rolled back: nothing
applied) from a reply lost.
"""

from __future__ import annotations

import logging
import threading
import weakref
from typing import Any

# What libpq says, of its own, when the socket closed under it.
_CLOSED = "server closed the connection unexpectedly"
_FINAL = frozenset({"FATAL", "PANIC"})
_lock = threading.Lock()
# Per connection: the SQLSTATE and the message of the server's FATAL.
_last_words: weakref.WeakKeyDictionary[Any, tuple[str, str]] = weakref.WeakKeyDictionary()


def hear_last_words(conn: Any) -> None:
    """Keep the FATAL message the server sends `conn` before it ends the session, for
    `reason` (a notice handler holding `conn` weakly: none keeps it alive)."""
    ref = weakref.ref(conn)

    def heard(diag: Any) -> None:
        if diag.severity_nonlocalized in _FINAL and diag.message_primary:
            owner = ref()
            if owner is not None:
                with _lock:
                    _last_words[owner] = (str(diag.sqlstate or ""), str(diag.message_primary))

    conn.add_notice_handler(heard)


def last_words(conn: Any) -> str | None:
    """The FATAL message the server sent `conn` before it closed, if one came."""
    with _lock:
        said = _last_words.get(conn)
    return None if said is None else said[1]


def last_state(conn: Any) -> str | None:
    """The SQLSTATE of that message ("25P03": it ended the session idle in a
    transaction, which it rolled back), if one came."""
    with _lock:
        said = _last_words.get(conn)
    return None if said is None else said[0]


def reason(exc: BaseException, conn: Any = None) -> str:
    """`exc`'s text on one line (its whitespace runs, line breaks included, as one
    space); for a connection the server closed after saying why, the server's words."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    words = last_words(conn) if conn is not None and _CLOSED in text else None
    return f"the server ended the session: {words}" if words else text


class _AfterFailureNoise(logging.Filter):
    """Drop psycopg's warnings about cleaning up after a call that already failed."""

    PREFIXES = (
        "error ignored terminating",
        "error ignored exiting",
        "discarding closed connection",
    )

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.PREFIXES)


class _OneLine(logging.Filter):
    """Write a psycopg warning's message on one line, as `reason` writes Spool's own.

    psycopg_pool logs libpq's text as it came: "error connecting in 'spool':
    ... Connection refused\\n\\tIs the server running ...", which the log formatter
    wrote as a literal \\n escape and a raw tab. Its whitespace runs become one space
    (the record's arguments are folded into its message: they hold the text)."""

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        if any(c in text for c in "\n\r\t\v\f"):
            record.msg = " ".join(text.split())
            record.args = None
        return True


def install() -> None:
    """Filter the loggers psycopg and psycopg_pool write those warnings to (once)."""
    for name in ("psycopg", "psycopg.pool"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _AfterFailureNoise) for f in logger.filters):
            logger.addFilter(_AfterFailureNoise())
        if not any(isinstance(f, _OneLine) for f in logger.filters):
            logger.addFilter(_OneLine())

"""What a Postgres failure writes to the log: one line, said once, by Spool.

libpq's messages span lines ("server closed the connection unexpectedly\\n\\tThis
probably means ..."), which the log formatter writes as literal \\n and \\t escapes
(chalicelib.logs.one_line): a log line should read as one. And psycopg adds its own
warnings for a call that failed with a lost connection, "error ignored terminating
<psycopg.Pipeline [BAD] at 0x...>: the connection is lost" (twice) and the pool's
"discarding closed connection: <... [BAD] ...>", beside Spool's own line that says
what happened and why; those only repeat it without the reason.
"""

from __future__ import annotations

import logging


def reason(exc: BaseException) -> str:
    """`exc`'s text on one line (its whitespace runs, line breaks included, as one space)."""
    return " ".join(str(exc).split()) or type(exc).__name__


class _AfterFailureNoise(logging.Filter):
    """Drop psycopg's warnings about cleaning up after a call that already failed."""

    PREFIXES = (
        "error ignored terminating",
        "error ignored exiting",
        "discarding closed connection",
    )

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.PREFIXES)


def install() -> None:
    """Filter the loggers psycopg and psycopg_pool write those warnings to (once)."""
    for name in ("psycopg", "psycopg.pool"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _AfterFailureNoise) for f in logger.filters):
            logger.addFilter(_AfterFailureNoise())

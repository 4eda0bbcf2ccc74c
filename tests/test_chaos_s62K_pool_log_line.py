"""psycopg_pool's own warnings read as one line in Spool's log (stop 62, helper K).

Was (found with `spool worker` on Postgres behind a loopback proxy that went away):
the pool, reconnecting, logged libpq's two-line message as it came:

    WARNING psycopg.pool: error connecting in 'spool': connection failed: ...
    Connection refused\\n<TAB>Is the server running on that host and accepting ...

the newline written as a literal \\n escape by the formatter and the tab raw. Spool's
own lines say the same on one line (pg_noise.reason); now the pool's do too: a filter
on the psycopg loggers (pg_noise.install) writes the message's whitespace runs as one
space.
"""

from __future__ import annotations

import io
import logging
import socket
from collections.abc import Iterator

import psycopg
import pytest
from psycopg_pool import ConnectionPool, PoolTimeout

from chalicelib import logs
from chalicelib.config import Settings
from chalicelib.storage import pg_noise

LIBPQ = (
    'connection failed: connection to server at "127.0.0.1", port 1 failed: '
    "Connection refused\n\tIs the server running on that host and accepting TCP/IP "
    "connections?"
)


@pytest.fixture
def text_stream() -> Iterator[io.StringIO]:
    buf = io.StringIO()
    logs.configure(Settings(), stream=buf, force=True)
    pg_noise.install()
    yield buf
    logs.reset()


def _pool_lines(out: str) -> list[str]:
    return [line for line in out.splitlines() if " psycopg.pool: " in line]


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_the_pools_reconnect_warning_is_one_line(text_stream: io.StringIO) -> None:
    """A real pool, reconnecting to a loopback port nobody listens on."""
    port = _closed_port()
    pool: ConnectionPool[psycopg.Connection] = ConnectionPool(
        f"postgresql://postgres@127.0.0.1:{port}/x?connect_timeout=2",
        min_size=1,
        max_size=1,
        timeout=1.5,
        reconnect_timeout=1.0,
        name="spool",
        open=False,
    )
    pool.open(wait=False)
    try:
        with pytest.raises(PoolTimeout):
            pool.getconn()
    finally:
        pool.close()
    lines = _pool_lines(text_stream.getvalue())
    assert any("error connecting in 'spool'" in line for line in lines), text_stream.getvalue()
    for line in lines:
        assert "\t" not in line and "\\n" not in line and "\\t" not in line, line
    told = [line for line in lines if "Connection refused" in line]
    assert told and all("Connection refused Is the server running" in t for t in told), lines


def test_any_pool_warning_with_libpq_text_is_one_line(text_stream: io.StringIO) -> None:
    """The pool's other warnings that carry an exception's text (error resetting, a
    task that failed) pass through the same filter."""
    pool_log = logging.getLogger("psycopg.pool")
    pool_log.warning("error resetting connection: %s", psycopg.OperationalError(LIBPQ))
    pool_log.warning("task run %s failed: %s: %s", "<AddConnection>", "OperationalError", LIBPQ)
    lines = _pool_lines(text_stream.getvalue())
    assert len(lines) == 2, text_stream.getvalue()
    for line in lines:
        assert line.endswith(
            "Connection refused Is the server running on that host and accepting TCP/IP "
            "connections?"
        ), line


def test_the_after_failure_noise_is_still_dropped(text_stream: io.StringIO) -> None:
    logging.getLogger("psycopg.pool").warning("discarding closed connection: %s", "<c [BAD]>")
    logging.getLogger("psycopg").warning("error ignored terminating %s: lost", "<Pipeline>")
    assert text_stream.getvalue() == ""

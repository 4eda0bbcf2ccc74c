"""Which failed Postgres connections are refusals that waiting cannot fix.

A wrong password, a role that does not exist or may not log in, a database that
does not exist (never made, or dropped under the worker) or that the role may
not CONNECT to: the server refuses the connection outright, and it will refuse
the same URL every time. `spool worker` read those as an outage and waited for
ever, saying "store unavailable ... waits it out".

libpq gives a connection failure no SQLSTATE (psycopg's OperationalError has
`sqlstate` None: the server's FATAL message arrives before any result), so the
server's own words are matched, in English: the server's lc_messages decides
their language, and a translated one stays an outage, as before.

A pool that cannot reconnect says only that it timed out, so PostgresStore
keeps the last reason its pool's connections failed (`ConnectFailures`, the
pool's connection_class) and raises with that reason attached.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from chalicelib.storage import pg_noise

if TYPE_CHECKING:  # imported on use: store_outage asks `refusal` without loading a driver
    import psycopg

# (what the server says, what it means), checked in the error's text.
_REFUSALS = (
    ("password authentication failed", "credentials"),
    ("authentication failed for user", "credentials"),  # ident, peer, GSSAPI, ...
    ("no password supplied", "credentials"),
    ("no pg_hba.conf entry", "credentials"),
    ("pg_hba.conf rejects connection", "credentials"),
    ("is not permitted to log in", "credentials"),
    ('role "', "credentials"),  # with "does not exist" (checked below)
    ('database "', "database"),  # with "does not exist"
    ("permission denied for database", "database"),  # no CONNECT privilege
)


def refusal(exc: BaseException) -> str | None:
    """`credentials` or `database` when `exc` is psycopg's refused connection, else None."""
    if not any(
        cls.__name__ == "OperationalError" and cls.__module__.startswith("psycopg")
        for cls in type(exc).__mro__
    ):
        return None
    text = str(exc)
    if "FATAL" not in text and "no password supplied" not in text:
        return None  # refusals come as the server's FATAL (or libpq's own, for a password)
    for said, meaning in _REFUSALS:
        if said in text and (not said.endswith('"') or "does not exist" in text):
            return meaning
    return None


# PgBouncer's words for a client past its max_client_conn (its default is 100, fewer
# than the connections a deployment that needs a pooler opens).
POOLER_FULL = "no more connections allowed (max_client_conn)"

# What a server with no connection slot left for this role says (max_connections
# taken, or the role's or the database's CONNECTION LIMIT; the reserved-slots line
# is PG 15's wording, then 16's). Not a refusal: a slot frees when a session ends.
_FULL = (
    "too many clients already",
    "too many connections for role",
    "too many connections for database",
    "remaining connection slots are reserved",
    POOLER_FULL,
)


# What to do about it, said by every command that meets it (CLI start, `spool db`),
# after "the server answered but".
FULL_HINT = (
    "has no connection slot free for this role (max_connections, or the "
    "role's or database's CONNECTION LIMIT, taken by other sessions): end idle "
    "sessions (see pg_stat_activity), lower pool_max on Spool's processes or raise "
    "the limit, then run it again"
)


# The same for PgBouncer's refusal: it was said as a wrong URL or a server down.
POOLER_FULL_HINT = (
    "has no client slot free (PgBouncer's max_client_conn, taken by other clients; "
    "each of Spool's connections is one): raise max_client_conn in pgbouncer.ini to "
    "at least the connections you budget (docs/self-hosting.md, PgBouncer) or lower "
    "pool_max on Spool's processes, then run it again"
)


def full_hint(exc: BaseException) -> str:
    """What to do about a full server (`server_full`): PgBouncer's or Postgres's."""
    return POOLER_FULL_HINT if POOLER_FULL in str(exc) else FULL_HINT


def server_full(exc: BaseException) -> bool:
    """True when `exc` is the server turning a connection away for want of a free slot."""
    text = str(exc)
    return "FATAL" in text and any(said in text for said in _FULL)


class ConnectFailures:
    """The last reason a pool's new connection failed, until one succeeds."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.last: BaseException | None = None

    def refused(self) -> BaseException | None:
        """The last failure, if it was a refusal (see `refusal`)."""
        with self._lock:
            last = self.last
        return last if last is not None and refusal(last) is not None else None

    def reason(self) -> str | None:
        """The last failure's words on one line, for the log (None: no failure since
        the last success). A server that is full ("too many clients already") or
        starting up is named here: the pool's own line is let through once a minute."""
        with self._lock:
            last = self.last
        return None if last is None else pg_noise.reason(last)

    def connection_class(self) -> type[psycopg.Connection[Any]]:
        """A Connection class for ConnectionPool(connection_class=...) that records here."""
        import psycopg

        failures = self

        class RecordedConnection(psycopg.Connection[Any]):
            @classmethod
            def connect(cls, *args: Any, **kwargs: Any) -> Any:
                try:
                    conn = super().connect(*args, **kwargs)
                except psycopg.OperationalError as exc:
                    with failures._lock:
                        failures.last = exc
                    raise
                with failures._lock:
                    failures.last = None
                return conn

        return RecordedConnection

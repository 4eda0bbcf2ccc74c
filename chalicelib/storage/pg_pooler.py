"""Postgres through a connection pooler (PgBouncer): what Spool's sessions need of it.

Spool's connections carry their session settings (search_path for schema=,
statement_timeout, timezone, datestyle ...: postgres.parse_url) in the startup
packet's `options`. PgBouncer refuses that parameter unless its
`ignore_startup_parameters` lists it, and then drops it: the session ran in the
server's default schema (`spool db status` called every migration pending, `spool db
migrate` would have built a second, empty Spool) without the timeouts. So a
connection that finds itself behind a pooler sets them itself, after connecting.

PgBouncer gives its clients a cancel key of its own, so the backend pid the
connection was handed is not the server's `pg_backend_pid()`: that tells a pooler
apart without asking it. Per-transaction (or per-statement) pooling cannot carry
what Spool keeps in a session (LISTEN wake-ups, settings, `spool db migrate`'s
advisory lock): a process refuses to start there, naming the fix.
"""

from __future__ import annotations

import re
from typing import Any

import psycopg

from chalicelib.storage import config_error

# libpq's own option syntax: `-c name=value` or `--name=value`, split on unescaped
# whitespace, backslash escaping the next character.
_TOKEN = re.compile(r"(?:\\.|\S)+")
_UNESCAPE = re.compile(r"\\(.)")
_REFUSED = re.compile(r"unsupported startup parameter: (\S+)")


def startup_settings(options: str) -> tuple[tuple[str, str], ...]:
    """The (name, value) pairs `options` sets, in order (the last of a name wins)."""
    tokens = [_UNESCAPE.sub(r"\1", t) for t in _TOKEN.findall(options)]
    pairs: list[tuple[str, str]] = []
    i = 0
    while i < len(tokens):
        token = tokens[i]
        if token == "-c" and i + 1 < len(tokens):
            i += 1
            token = tokens[i]
        elif token.startswith("-c"):
            token = token[2:]
        elif token.startswith("--"):
            token = token[2:].replace("-", "_")
        else:
            i += 1
            continue
        name, sep, value = token.partition("=")
        if sep:
            pairs.append((name, value))
        i += 1
    return tuple(pairs)


def behind_pooler(conn: Any, server_pid: int) -> bool:
    """True when `conn` reaches the server through a pooler (see the module's doc)."""
    return bool(server_pid != conn.info.backend_pid)


def apply_settings(conn: Any, settings: tuple[tuple[str, str], ...]) -> None:
    """Set for this session what the dropped startup options would have (one round trip)."""
    if not settings:
        return
    calls = ", ".join("set_config(%s, %s, false)" for _ in settings)
    conn.execute(f"SELECT {calls}", [v for pair in settings for v in pair])


def pooling_mode(conninfo: str, conn: Any, timeout: int, rounds: int = 5) -> str:
    """ "session", or the pooling that shares one server session between clients
    ("transaction" or "statement"). Two clients connected at once never share a
    server session in session mode: one that sees the other's backend, or `conn`
    seen on another backend from one statement to the next, is pooled finer. Other
    clients' traffic can hide that in one round (the pooler hands out another idle
    server), so a few are tried; session mode answers the same every time."""
    first = conn.execute("SELECT pg_backend_pid()").fetchone()[0]
    try:
        other = psycopg.connect(conninfo, autocommit=False, connect_timeout=timeout)
    except psycopg.OperationalError:
        return "session"  # cannot tell; the caller's own connection works
    try:
        for _ in range(rounds):
            try:
                # A transaction holds its server session until it ends, in every mode.
                theirs = other.execute("SELECT pg_backend_pid()").fetchone()
            except psycopg.Error as exc:
                if "statement pool" in str(exc):
                    return "statement"  # PgBouncer: "transaction blocks not allowed in ..."
                raise
            if theirs is not None and theirs[0] == first:
                return "transaction"
            if conn.execute("SELECT pg_backend_pid()").fetchone()[0] != first:
                return "transaction"
            other.rollback()
        return "session"
    finally:
        other.close()


def refuse_shared_sessions(conninfo: str, conn: Any, timeout: int) -> None:
    """A ConfigError naming the fix when the pooler shares server sessions."""
    mode = pooling_mode(conninfo, conn, timeout)
    if mode == "session":
        return
    raise config_error(
        f"SPOOL_STORE_URL reaches Postgres through a pooler in {mode} pooling mode"
        f" (PgBouncer's pool_mode = {mode}), which shares a server session between"
        " clients: Spool keeps LISTEN wake-ups, its session settings (schema=, timeouts)"
        " and `spool db migrate`'s lock in a session. Set pool_mode = session for this"
        " database in pgbouncer.ini (or `pool_mode=session` on its [databases] line),"
        " or point SPOOL_STORE_URL at Postgres directly"
    )


def refused_parameter_hint(reason: str) -> str | None:
    """The fix for a pooler's "unsupported startup parameter" refusal, or None."""
    found = _REFUSED.search(reason)
    if found is None:
        return None
    name = found.group(1).rstrip(".,;")
    why = (
        " (Spool sends its session settings, search_path for schema= among them, as"
        " `options`, and sets them itself after connecting through a pooler)"
        if name == "options"
        else ""
    )
    return (
        f"a connection pooler (PgBouncer) refused the startup parameter {name!r}{why}:"
        f" add `ignore_startup_parameters = {name}` to the [pgbouncer] section of"
        " pgbouncer.ini (use pool_mode = session), or point SPOOL_STORE_URL at Postgres"
        " directly"
    )

"""`spool db migrate` and `spool db status`: the Postgres schema, versioned.

Only Postgres has migrations: SQLite and the memory store create their tables
themselves, and DynamoDB tables come from infra/. Run `spool db migrate` once
per deploy, before starting new API or worker processes; it is safe to run
again (it applies only what is missing) and from several hosts at once (an
advisory lock makes them take turns). On Redis, `spool db status` shows the
server's eviction policy and persistence instead (redis_policy).
"""

from __future__ import annotations

import argparse
import sys

from chalicelib.config import Settings
from chalicelib.redact import redact_url
from local import tables
from local.cli_errors import CliFailure

EXIT_PENDING = 3


URL_HELP = "the store's URL, e.g. postgresql://host/db (default: SPOOL_STORE_URL)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """--url on `spool db` and on each of its subcommands (either place works, as
    --url does for the job commands): `spool db migrate --url X` was refused and
    pointed at `spool db migrate --help`, a page with no --url on it."""
    parser.add_argument(
        "--url",
        help=URL_HELP + "; give it after `db`: before it, --url names a Spool server",
        default=None,
        dest="store_url",
    )
    sub = parser.add_subparsers(dest="db_command", required=True)
    commands = (
        sub.add_parser("migrate", help="apply pending migrations"),
        sub.add_parser(
            "status",
            help=f"show applied and pending migrations (exit {EXIT_PENDING} if any); on "
            f"Redis, the settings that lose jobs (exit {EXIT_PENDING} if its "
            "maxmemory-policy evicts)",
        ),
    )
    for command in commands:
        # SUPPRESS: unset here leaves what `spool db --url` set; set here, it wins.
        command.add_argument("--url", help=URL_HELP, default=argparse.SUPPRESS, dest="store_url")


def cmd_db(args: argparse.Namespace) -> int:
    from chalicelib.storage import store_scheme  # here: `spool --help` loads no store

    url = args.store_url or Settings.from_env().store_url
    source = "--url" if args.store_url else "SPOOL_STORE_URL"  # named as the user gave it
    scheme = store_scheme(url, source)  # an unknown one: ConfigError
    if scheme in ("redis", "rediss") and args.db_command == "status":
        return _redis_status(url)
    if scheme not in ("postgres", "postgresql"):
        print(
            f"nothing to migrate: only Postgres stores have migrations ({source} is {scheme}://...)",
            file=sys.stderr,
        )
        return 0

    import psycopg

    from chalicelib.storage import migrations, pg_pooler
    from chalicelib.storage.postgres import connect, parse_url

    settings = parse_url(url)
    where = f"schema {settings.schema}" if settings.schema else "the default schema"
    try:
        with connect(settings) as conn:
            if args.db_command == "migrate":
                ran = migrations.migrate(conn, settings.schema)
                for m in ran:
                    print(f"applied {m.version:04d}_{m.name}", file=sys.stderr)
                current = migrations.status(conn).current
                print(
                    f"{where} is at version {current}" + ("" if ran else " (already up to date)"),
                    file=sys.stderr,
                )
                return 0
            status = migrations.status(conn)
    except psycopg.Error as exc:
        verb = "migrate" if args.db_command == "migrate" else "read"
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        hint = pg_pooler.refused_parameter_hint(str(exc))
        if hint is not None:  # a pooler's refusal is no unreachable server
            raise CliFailure(f"cannot {verb} the schema at {redact_url(url)}: {hint}") from None
        raise CliFailure(
            f"cannot {verb} the schema at {redact_url(url)}: {reason}", _failure_hint(exc)
        ) from None
    with tables.reader_may_leave():  # `| head` keeps the exit code (3: pending)
        for m in status.available:
            at = status.applied.get(m.version)
            mark = f"applied {at:%Y-%m-%d %H:%M:%S}" if at else "pending"
            print(f"{m.version:04d}_{m.name:<30} {mark}")
        for version in status.newer:
            at = status.applied[version]
            print(f"{version:04d}_{'(unknown to this Spool)':<30} applied {at:%Y-%m-%d %H:%M:%S}")
    if status.pending:
        print(f"{len(status.pending)} pending: run `spool db migrate`", file=sys.stderr)
        return EXIT_PENDING
    if status.newer:
        # A rollout's old processes keep working on a newer schema (migrations only
        # add), so this is said, not refused: but it is no "up to date".
        known = migrations.latest_version()
        print(
            f"{where} is at version {status.current}, newer than this Spool "
            f"(it knows up to {known}): a newer Spool migrated it; upgrade this one",
            file=sys.stderr,
        )
        return 0
    print(f"{where} is up to date (version {status.current})", file=sys.stderr)
    return 0


def _redis_status(url: str) -> int:
    """`spool db status` on Redis: no migrations, but the settings that lose
    acknowledged jobs while every call succeeds (redis_policy). It said only "nothing
    to migrate", exit 0, on a server with an allkeys-* maxmemory-policy (a chaos run,
    s59). Exit EXIT_PENDING while the policy can evict Spool's keys: something to fix
    before the store is used. No persistence is said but not counted: it is a choice
    the durability table in docs/self-hosting.md describes."""
    import redis

    from chalicelib.storage import redis_policy
    from chalicelib.storage.redis_store import connect, parse_url, unreachable_message

    settings = parse_url(url)
    client = connect(settings)
    try:
        client.ping()
        names = ("maxmemory-policy", "maxmemory", "appendonly", "appendfsync", "save")
        values = {name: redis_policy.config_value(client, name) for name in names}
    except redis.RedisError as exc:
        raise CliFailure(unreachable_message(settings, exc)) from None  # it names the fix
    finally:
        client.close()
    with tables.reader_may_leave():
        for name, value in values.items():
            shown = "(refused: CONFIG GET is disabled here)" if value is None else repr(value)
            print(f"{name:<17} {shown}")
    policy = values["maxmemory-policy"]
    evicting = redis_policy.eviction_warning(policy) if policy is not None else None
    unsaved = redis_policy.persistence_warning(values["appendonly"], values["save"])
    for warning in (evicting, unsaved):
        if warning is not None:
            print(warning, file=sys.stderr)
    if evicting is not None:
        return EXIT_PENDING
    print("nothing to migrate: Redis stores have no migrations", file=sys.stderr)
    return 0


def _failure_hint(exc: BaseException) -> str:
    """What to check after `spool db` failed with `exc`.

    Every failure used to end "Check SPOOL_STORE_URL (or --url) and that Postgres is
    running and reachable", also when the server had answered: a migration refused
    by a read-only database (a standby, default_transaction_read_only) or cancelled
    by the role's lock_timeout while another session held a lock on Spool's tables
    sent the operator to the network instead of to the primary or to that session,
    and so did a server with no connection slot free ("too many clients already")."""
    from psycopg import errors as pg_errors

    from chalicelib.storage import pg_refusals

    if pg_refusals.server_full(exc):  # it answered: the network is fine, its slots are not
        return f"The server answered but {pg_refusals.full_hint(exc)}"
    if isinstance(exc, pg_errors.ReadOnlySqlTransaction):
        return (
            "The database takes no writes (a standby, or default_transaction_read_only "
            "is on): point SPOOL_STORE_URL at the primary, or turn "
            "default_transaction_read_only off"
        )
    if isinstance(exc, pg_errors.LockNotAvailable | pg_errors.QueryCanceled):
        return (
            "Another session held a lock on Spool's tables past the role's lock_timeout "
            "or statement_timeout (a long transaction, a LOCK TABLE, a VACUUM FULL; see "
            "pg_locks): run it again once that session has ended"
        )
    code = getattr(exc, "sqlstate", None)
    if code:  # the server answered: it is reachable
        return f"The server refused it (SQLSTATE {code}): its log names the statement"
    return "Check SPOOL_STORE_URL (or --url) and that Postgres is running and reachable"

"""Spool through PgBouncer (docs/self-hosting.md recommends it in front of Postgres).

Spool's connections carry their session settings (search_path for schema=,
statement_timeout, timezone, datestyle ...) in the startup packet's `options`.
PgBouncer 1.18 refuses that parameter ("unsupported startup parameter: options",
which read as an unreachable server) unless `ignore_startup_parameters = options`,
and then drops it silently: `spool db status` through it looked in `public` and
called every migration pending, so `spool db migrate` would have built a second,
empty Spool beside the real one. Spool now notices a pooler (its backend pid is not
the one the connection was given) and sets the same settings after connecting.

Transaction (and statement) pooling cannot carry LISTEN wake-ups or session
settings: a process refuses to start there, naming `pool_mode = session`.
"""

from __future__ import annotations

import pytest

from chalicelib.clock import FakeClock
from chalicelib.config import ConfigError
from chalicelib.storage import migrations
from chalicelib.storage.base import StoreUnreachable
from chalicelib.storage.postgres import PostgresStore, connect, parse_url, probe
from tests.factories import new_job
from tests.pg_support import fresh_schema, with_port
from tests.pgbouncer_support import pgbouncer


def _through(direct: str, bouncer: str) -> str:
    """The fresh schema's URL (options and all) through the bouncer's port."""
    from urllib.parse import urlsplit

    return with_port(direct, urlsplit(bouncer).port or 0)


def test_session_mode_keeps_the_schema_and_the_session_settings() -> None:
    with fresh_schema() as direct, pgbouncer("session") as bouncer:
        settings = parse_url(_through(direct, bouncer) + "&statement_timeout=7")
        with connect(settings) as conn:
            path, timeout, zone, style = conn.execute(
                "SELECT current_setting('search_path'), current_setting('statement_timeout'),"
                " current_setting('TimeZone'), current_setting('IntervalStyle')"
            ).fetchone()
            assert (path, timeout, zone, style) == (settings.schema, "7s", "UTC", "postgres")
            assert migrations.status(conn).current == migrations.latest_version()


def test_session_mode_store_and_wake_ups_work() -> None:
    with fresh_schema() as direct, pgbouncer("session") as bouncer:
        settings = parse_url(_through(direct, bouncer))
        clock = FakeClock()
        store = PostgresStore(settings, clock)
        other = PostgresStore(settings, clock)
        try:
            store.notifier.wait(0)  # LISTEN now
            [result] = other.add([new_job(clock)])
            assert store.notifier.wait(10), "the enqueue's NOTIFY never woke the worker"
            [claimed] = store.claim(1, 30)
            assert claimed.id == result.job.id
        finally:
            other.close()
            store.close()


def test_a_refused_options_parameter_names_the_pgbouncer_setting() -> None:
    with fresh_schema() as direct, pgbouncer("session", ignore="") as bouncer:
        with pytest.raises(StoreUnreachable) as caught:
            probe(parse_url(_through(direct, bouncer)))
        assert "ignore_startup_parameters = options" in str(caught.value)
        assert "Check that the server is running" not in str(caught.value)


@pytest.mark.parametrize("mode", ["transaction", "statement"])
def test_transaction_pooling_is_refused_at_start_naming_session_mode(mode: str) -> None:
    with fresh_schema() as direct, pgbouncer(mode) as bouncer:
        with pytest.raises(ConfigError) as caught:
            PostgresStore(parse_url(_through(direct, bouncer)), FakeClock())
        assert "pool_mode = session" in str(caught.value)
        assert mode in str(caught.value)

"""tests/pg_support.py's skip-or-fail rule: outside CI a Postgres test that cannot run
skips and says why; in CI (CI=true or SPOOL_REQUIRE_POSTGRES=1) it fails and says why,
so a missing server or missing server binaries (the restart test's private server,
tests/pg_private.py) can never pass CI as a quiet skip.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests import pg_private, pg_support


@pytest.fixture
def outside_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.delenv("SPOOL_REQUIRE_POSTGRES", raising=False)


@pytest.fixture(params=[("CI", "true"), ("SPOOL_REQUIRE_POSTGRES", "1")], ids=["CI", "REQUIRE"])
def in_ci(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, outside_ci) -> None:
    name, value = request.param
    monkeypatch.setenv(name, value)


def fake_bindir(root: Path, version: str, tools: tuple[str, ...] = pg_private.TOOLS) -> Path:
    """A Debian-style /usr/lib/postgresql/VERSION/bin holding `tools` (empty scripts)."""
    bindir = root / version / "bin"
    bindir.mkdir(parents=True)
    for tool in tools:
        script = bindir / tool
        script.write_text("#!/bin/sh\n", encoding="utf-8")
        script.chmod(0o755)
    return bindir


def test_unavailable_skips_with_the_reason_outside_ci(outside_ci) -> None:
    with pytest.raises(pytest.skip.Exception, match="no server here"):
        pg_support.unavailable("no server here")


def test_unavailable_fails_with_the_reason_in_ci(in_ci) -> None:
    with pytest.raises(pytest.fail.Exception, match=r"no server here .*required here"):
        pg_support.unavailable("no server here")


def test_missing_server_binaries_fail_in_ci(in_ci, tmp_path) -> None:
    with pytest.raises(pytest.fail.Exception, match="needs initdb, pg_ctl and postgres"):
        pg_private.find_bindir(path=str(tmp_path), debian_glob=str(tmp_path / "*" / "bin"))


def test_missing_server_binaries_skip_saying_why_elsewhere(outside_ci, tmp_path) -> None:
    with pytest.raises(pytest.skip.Exception, match="Debian package postgresql"):
        pg_private.find_bindir(path=str(tmp_path), debian_glob=str(tmp_path / "*" / "bin"))


def test_the_newest_complete_debian_bindir_is_chosen(tmp_path) -> None:
    fake_bindir(tmp_path, "14")
    newest = fake_bindir(tmp_path, "16")
    fake_bindir(tmp_path, "17", tools=("initdb", "pg_ctl"))  # no server binary: not usable
    empty = tmp_path / "empty"
    empty.mkdir()
    found = pg_private.find_bindir(path=str(empty), debian_glob=str(tmp_path / "*" / "bin"))
    assert found == newest


def test_initdb_on_path_is_followed_to_its_folder(tmp_path) -> None:
    real = fake_bindir(tmp_path / "lib", "13")
    fake_bindir(tmp_path / "lib", "16")
    on_path = tmp_path / "path"
    on_path.mkdir()
    (on_path / "initdb").symlink_to(real / "initdb")  # as /usr/local/bin/initdb may be
    assert pg_private.find_bindir(path=str(on_path), debian_glob=str(tmp_path / "lib/*/bin")) == (
        real
    )


def test_a_bindir_without_pg_ctl_fails_in_ci(in_ci, tmp_path) -> None:
    fake_bindir(tmp_path, "15", tools=("initdb", "postgres"))
    with pytest.raises(pytest.fail.Exception, match="none was found"):
        pg_private.find_bindir(path=str(tmp_path), debian_glob=str(tmp_path / "*" / "bin"))


@pytest.mark.postgres
def test_a_private_server_restarts_on_its_own_port_and_keeps_its_data() -> None:
    """What the restart test relies on: its own server, a committed row survives
    `-m immediate`, and the shared server is not the one restarted."""
    import psycopg

    with pg_private.private_server() as server:
        assert server.port != 5432
        with psycopg.connect(server.url, autocommit=True) as conn:
            conn.execute("CREATE TABLE kept (n int)")
            conn.execute("INSERT INTO kept VALUES (7)")
            before = conn.execute("SELECT pg_postmaster_start_time()").fetchone()
        restarted = server.restart_immediate()
        assert restarted.returncode == 0, restarted.stderr + server.tail()
        with psycopg.connect(server.url, autocommit=True) as conn:
            assert conn.execute("SELECT n FROM kept").fetchall() == [(7,)]
            after = conn.execute("SELECT pg_postmaster_start_time()").fetchone()
        assert before != after
        root = server.root
    assert not root.exists()  # stopped and deleted


def catalog(conn: Any, schema: str) -> dict[str, list[tuple[object, ...]]]:
    """What `schema` holds, its own name written as S: relations, columns, constraints,
    indexes, functions, triggers, views, and the migrations its ledger records."""
    queries = {
        "relations": "SELECT c.relname, c.relkind FROM pg_class c"
        " JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = %s ORDER BY 1",
        "columns": "SELECT table_name, ordinal_position, column_name, data_type,"
        " column_default, is_nullable FROM information_schema.columns"
        " WHERE table_schema = %s ORDER BY 1, 2",
        "constraints": "SELECT c.relname, k.conname, pg_get_constraintdef(k.oid)"
        " FROM pg_constraint k JOIN pg_class c ON c.oid = k.conrelid"
        " JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = %s ORDER BY 1, 2",
        "indexes": "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = %s ORDER BY 1",
        "functions": "SELECT p.proname, pg_get_functiondef(p.oid) FROM pg_proc p"
        " JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = %s ORDER BY 1, 2",
        "triggers": "SELECT c.relname, t.tgname, pg_get_triggerdef(t.oid) FROM pg_trigger t"
        " JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = %s AND NOT t.tgisinternal ORDER BY 1, 2",
        "views": "SELECT viewname, definition FROM pg_views WHERE schemaname = %s ORDER BY 1",
    }
    found = {
        name: [
            tuple(str(v).replace(schema, "S") if isinstance(v, str) else v for v in row)
            for row in conn.execute(query, (schema,)).fetchall()
        ]
        for name, query in queries.items()
    }
    found["ledger"] = conn.execute(
        f'SELECT version, name FROM "{schema}".schema_migrations ORDER BY 1'
    ).fetchall()
    return found


@pytest.mark.postgres
def test_a_fresh_schema_holds_what_migrate_makes() -> None:
    """fresh_schema makes its schemas in one script (pg_support.migrate_at_once), not
    through migrations.migrate: the two must give the same schema, object for object."""
    from chalicelib.storage import migrations
    from chalicelib.storage.postgres import connect, parse_url

    with pg_support.fresh_schema(migrate=False) as migrated_url:
        with connect(parse_url(migrated_url)) as conn:
            migrate_schema = parse_url(migrated_url).schema
            assert migrate_schema is not None
            assert migrations.migrate(conn, migrate_schema)  # the product's own
        with pg_support.fresh_schema() as fresh_url:
            fresh = parse_url(fresh_url).schema
            assert fresh is not None
            admin = pg_support.admin_connect()
            try:
                made = catalog(admin, fresh)
                assert made == catalog(admin, migrate_schema)
            finally:
                admin.close()
    assert [v for v, _ in made["ledger"]] == [m.version for m in migrations.available()]
    assert len(made["relations"]) > 10 and made["functions"] and made["indexes"]


@pytest.mark.postgres
def test_a_fresh_schema_is_migrated_in_one_round_trip(monkeypatch: pytest.MonkeyPatch) -> None:
    """About 480 Postgres tests start on a fresh schema: migrations.migrate's 60-odd
    round trips (a statement, a BEGIN or a COMMIT waiting for the WAL flush each) took
    0.3-0.5 s of each on a loaded machine. Now one script: the statements the client
    sends are connect's session setting and that script. Counted on this thread only,
    with the schema made in the test (tests/pg_ahead.py's thread may be dropping
    another test's schema meanwhile, through the same class)."""
    import threading

    import psycopg

    monkeypatch.setenv("SPOOL_TEST_PG_AHEAD", "0")
    here = threading.current_thread()

    sent: list[object] = []
    real = psycopg.Connection.execute

    def counted(self: Any, query: Any, *args: Any, **kwargs: Any) -> Any:
        if threading.current_thread() is here:
            sent.append(query)
        return real(self, query, *args, **kwargs)

    monkeypatch.setattr(psycopg.Connection, "execute", counted)
    with pg_support.fresh_schema():
        made = list(sent)
    assert len(made) <= 2, made

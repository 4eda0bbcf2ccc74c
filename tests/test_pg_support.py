"""tests/pg_support.py's skip-or-fail rule: outside CI a Postgres test that cannot run
skips and says why; in CI (CI=true or SPOOL_REQUIRE_POSTGRES=1) it fails and says why,
so a missing server or missing server binaries (the restart test's private server,
tests/pg_private.py) can never pass CI as a quiet skip.
"""

from __future__ import annotations

from pathlib import Path

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

"""tests/pg_support.py's skip-or-fail rule: outside CI a Postgres test that cannot run
skips and says why; in CI (CI=true or SPOOL_REQUIRE_POSTGRES=1) it fails and says why,
so a missing server or a missing pg_ctlcluster can never pass CI as a quiet skip.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests import pg_support

LISTING = (
    "14 old  5433 down   postgres /var/lib/postgresql/14/old  /var/log/postgresql/14-old.log\n"
    "15 main 5432 online postgres /var/lib/postgresql/15/main /var/log/postgresql/15-main.log\n"
)


@pytest.fixture
def outside_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.delenv("SPOOL_REQUIRE_POSTGRES", raising=False)


@pytest.fixture(params=[("CI", "true"), ("SPOOL_REQUIRE_POSTGRES", "1")], ids=["CI", "REQUIRE"])
def in_ci(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, outside_ci) -> None:
    name, value = request.param
    monkeypatch.setenv(name, value)


def fake_lsclusters(directory: Path, monkeypatch: pytest.MonkeyPatch, output: str) -> None:
    """Only a pg_lsclusters that prints `output` on PATH."""
    script = directory / "pg_lsclusters"
    script.write_text(f"#!/bin/sh\nprintf '%s' '{output}'\n", encoding="utf-8")  # a builtin
    script.chmod(0o755)
    monkeypatch.setenv("PATH", str(directory))


def test_unavailable_skips_with_the_reason_outside_ci(outside_ci) -> None:
    with pytest.raises(pytest.skip.Exception, match="no server here"):
        pg_support.unavailable("no server here")


def test_unavailable_fails_with_the_reason_in_ci(in_ci) -> None:
    with pytest.raises(pytest.fail.Exception, match=r"no server here .*required here"):
        pg_support.unavailable("no server here")


def test_missing_pg_lsclusters_fails_in_ci(in_ci, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # nothing on it
    with pytest.raises(pytest.fail.Exception, match="pg_lsclusters is not on PATH"):
        pg_support.local_cluster()


def test_missing_pg_lsclusters_skips_saying_why_elsewhere(
    outside_ci, tmp_path, monkeypatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(pytest.skip.Exception, match="postgresql-common"):
        pg_support.local_cluster()


def test_the_cluster_on_the_servers_port_is_chosen(tmp_path, monkeypatch) -> None:
    fake_lsclusters(tmp_path, monkeypatch, LISTING)
    command = ["pg_ctlcluster", "--skip-systemctl-redirect"]
    assert pg_support.local_cluster("postgresql://u@127.0.0.1:5432/test") == [
        *command,
        "15",
        "main",
    ]
    assert pg_support.local_cluster("postgresql://u@127.0.0.1:5433/test") == [*command, "14", "old"]


def test_no_cluster_on_the_port_fails_in_ci(in_ci, tmp_path, monkeypatch) -> None:
    fake_lsclusters(tmp_path, monkeypatch, LISTING)
    with pytest.raises(pytest.fail.Exception, match="no cluster on port 6543"):
        pg_support.local_cluster("postgresql://u@127.0.0.1:6543/test")

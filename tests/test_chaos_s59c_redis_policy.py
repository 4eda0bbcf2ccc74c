"""Redis settings that lose acknowledged jobs while every call succeeds (s59 chaos run).

`spool serve` and `spool worker` on a private redis-server with noeviction; an
operator ran `CONFIG SET maxmemory-policy allkeys-lru` and `maxmemory 5mb`: 245 of
400 acknowledged jobs then answered 404, and /health said {"status":"ok"} throughout,
because the policy was read only when the store opened. A server with no
persistence at all (`appendonly no`, `save ""`) started without a word, though a
restart of it loses every job. Now the policy is read again by /health and the
worker's beat (at most every RECHECK_SECONDS), /health's body names it and the fix,
and a server without persistence is warned about when the store opens.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from chalice.test import Client

import app as spool_app
from chalicelib.clock import FakeClock
from chalicelib.storage import redis_policy
from chalicelib.storage.redis_store import from_url
from tests.apikit import Api, installed, settings_for
from tests.procs import run_spool
from tests.redis_support import admin, free_port, private_server, with_prefix

pytestmark = pytest.mark.timeout(60)


def _said(caplog: pytest.LogCaptureFixture, word: str) -> list[str]:
    return [
        r.getMessage() for r in caplog.records if r.name == "spool.redis" and word in r.getMessage()
    ]


@pytest.mark.parametrize("check", ["health", "beat"])
def test_a_policy_changed_to_evict_under_a_running_store_is_noticed(
    tmp_path: Path, check: str, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(redis_policy, "RECHECK_SECONDS", 0.0)  # every look reads it
    with private_server(tmp_path / "redis", appendfsync="always") as server:
        store = from_url(with_prefix(server.url, "policy"))
        control = admin(server.url)
        try:
            clock = FakeClock(store.clock.now())

            def look() -> None:
                if check == "health":
                    store.check_writable()
                else:
                    store.beat("w1", None, clock.now())

            with caplog.at_level(logging.WARNING, logger="spool.redis"):
                look()
                assert store.warnings() == []
                control.config_set("maxmemory-policy", "allkeys-lru")
                look()
                (warning,) = store.warnings()
                assert "allkeys-lru" in warning and "noeviction" in warning
                look()  # logged once per change, not at every look
                assert len(_said(caplog, "is allkeys-lru")) == 1, caplog.text
                control.config_set("maxmemory-policy", "noeviction")
                look()
                assert store.warnings() == []
                assert len(_said(caplog, "is now noeviction")) == 1, caplog.text
        finally:
            control.close()
            store.close()


def test_health_names_an_evicting_policy_and_its_fix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """/health stays 200 (the store works) and its body says what to set."""
    monkeypatch.setattr(redis_policy, "RECHECK_SECONDS", 0.0)
    with private_server(tmp_path / "redis", appendfsync="always") as server:
        url = with_prefix(server.url, "health")
        control = admin(server.url)
        try:
            with installed(settings_for(tmp_path, store_url=url)), Client(spool_app.app) as client:
                api = Api(client)
                first = api.get("/health", key=None)
                assert first.status == 200 and "warnings" not in first.json
                control.config_set("maxmemory-policy", "allkeys-random")
                reply = api.get("/health", key=None)
                assert reply.status == 200
                (warning,) = reply.json["warnings"]
                assert "allkeys-random" in warning
                assert "CONFIG SET maxmemory-policy noeviction" in warning
                assert "127.0.0.1" not in reply.body.decode()
        finally:
            control.close()


@pytest.mark.parametrize("appendfsync", ["no", "always"])
def test_a_server_without_persistence_is_warned_about_when_the_store_opens(
    tmp_path: Path, appendfsync: str, caplog: pytest.LogCaptureFixture
) -> None:
    """private_server's "no" is `appendonly no` with `save ""`: nothing on disk."""
    with (
        private_server(tmp_path / "redis", appendfsync=appendfsync) as server,
        caplog.at_level(logging.WARNING, logger="spool.redis"),
    ):
        from_url(with_prefix(server.url, "durable")).close()
    said = _said(caplog, "no persistence")
    if appendfsync == "no":
        assert len(said) == 1 and "appendonly yes" in said[0], caplog.text
    else:
        assert said == [], said


def test_a_server_with_snapshots_only_is_not_called_unpersisted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with private_server(tmp_path / "redis", appendfsync="no") as server:
        control = admin(server.url)
        control.config_set("save", "3600 1")
        control.close()
        with caplog.at_level(logging.WARNING, logger="spool.redis"):
            from_url(with_prefix(server.url, "rdb")).close()
    assert _said(caplog, "no persistence") == []


def test_db_status_on_redis_names_an_evicting_policy_and_missing_persistence(
    tmp_path: Path,
) -> None:
    """`spool db status` on a Redis store said only "nothing to migrate", exit 0,
    on a server that deletes jobs once full and keeps none across a restart."""
    with private_server(tmp_path / "redis", appendfsync="no") as server:
        control = admin(server.url)
        control.config_set("maxmemory-policy", "allkeys-lru")
        control.close()
        done = run_spool(tmp_path, "db", "status", "--url", with_prefix(server.url, "cli"))
    assert done.returncode == 3, done.stderr
    assert "maxmemory-policy" in done.stdout and "allkeys-lru" in done.stdout
    assert "CONFIG SET maxmemory-policy noeviction" in done.stderr
    assert "no persistence" in done.stderr


def test_db_status_on_a_safe_redis_exits_0(tmp_path: Path) -> None:
    with private_server(tmp_path / "redis", appendfsync="always") as server:
        done = run_spool(tmp_path, "db", "status", "--url", with_prefix(server.url, "cli"))
    assert done.returncode == 0, done.stderr
    assert "noeviction" in done.stdout and "appendonly" in done.stdout
    assert "no persistence" not in done.stderr and "Traceback" not in done.stderr


def test_db_status_on_an_unreachable_redis_says_so(tmp_path: Path) -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    done = run_spool(tmp_path, "db", "status", "--url", url)
    assert done.returncode != 0 and done.returncode != 3
    assert "cannot reach the Redis store" in done.stderr and "Traceback" not in done.stderr


def test_the_openapi_document_names_healths_warnings() -> None:
    from chalicelib.api.schemas import Health

    properties = Health.model_json_schema()["properties"]
    assert "warnings" in properties and "maxmemory-policy" in properties["warnings"]["description"]

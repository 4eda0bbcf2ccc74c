"""/health answers 503 when the store answers reads but refuses writes.

A read-only Postgres (a standby, `default_transaction_read_only`) and a Redis that
refuses writes (too few replicas for min-replicas-to-write, a failed save) passed
/health's read, so a load balancer kept sending enqueues that all failed. Now
/health asks Postgres `SHOW transaction_read_only` and sets a short-lived key of its
own on Redis, and its 503 says what to fix, naming no host, path or password.

The Postgres case makes a database of its own read-only, never SPOOL_TEST_PG_URL's,
which the rest of the suite is using at the same time.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
import redis
from chalice.test import Client

import app as spool_app
from tests.apikit import Api, installed, settings_for
from tests.pg_support import (
    BASE_URL,
    admin_connect,
    drop_database_later,
    fresh_schema,
    new_schema_name,
)
from tests.redis_support import private_server

pytestmark = pytest.mark.timeout(120)


def health(tmp_path: Path, store_url: str) -> Any:
    with installed(settings_for(tmp_path, store_url=store_url)), Client(spool_app.app) as client:
        return Api(client).get("/health", key=None)


def assert_no_secrets(reply: Any, *words: str) -> None:
    text = reply.body.decode()
    for word in ("127.0.0.1", "postgres@", "redis://", "postgresql://", *words):
        assert word not in text


@pytest.fixture
def read_only_database() -> Iterator[str]:
    """A migrated schema in a database of the test's own, read-only for new sessions
    while the test runs: the suite's other tests, running in parallel on the test
    database, never meet a read-only session."""
    database = new_schema_name()
    parts = urlsplit(BASE_URL)
    base = urlunsplit((parts.scheme, parts.netloc, f"/{database}", "", ""))
    admin = admin_connect()
    try:
        admin.execute(f'CREATE DATABASE "{database}"')
        try:
            with fresh_schema(base=base) as url:
                read_only = f'ALTER DATABASE "{database}" SET default_transaction_read_only'
                admin.execute(f"{read_only} = on")
                try:
                    yield url
                finally:  # fresh_schema's own clean-up writes
                    admin.execute(f"{read_only} = off")
        finally:
            drop_database_later(database)
    finally:
        admin.close()


def test_health_is_503_on_a_read_only_postgres_saying_what_to_fix(
    tmp_path: Path, read_only_database: str
) -> None:
    with psycopg.connect(read_only_database.split("?")[0], autocommit=True) as probe:
        assert probe.execute("SHOW transaction_read_only").fetchone() == ("on",)
    reply = health(tmp_path, read_only_database)
    assert reply.status == 503
    assert reply.json["error"]["code"] == "store_unavailable"
    message = reply.json["error"]["message"]
    assert "read-only" in message and "default_transaction_read_only" in message
    assert reply.header("Retry-After") is not None
    assert_no_secrets(reply)


def test_health_is_200_on_a_postgres_that_takes_writes(tmp_path: Path) -> None:
    with fresh_schema() as url:
        reply = health(tmp_path, url)
    assert reply.status == 200, reply.body


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[tuple[str, redis.Redis]]:
    """A redis-server of the test's own (its settings are changed), with a client."""
    with private_server(tmp_path / "redis", appendfsync="no") as server:
        admin = redis.Redis(port=server.port, socket_timeout=5)
        try:
            yield server.url, admin
        finally:
            admin.close()


def test_health_is_503_on_a_redis_without_the_replicas_it_needs_to_write(
    tmp_path: Path, private_redis: tuple[str, redis.Redis]
) -> None:
    url, admin = private_redis
    assert health(tmp_path, url).status == 200
    admin.config_set("min-replicas-to-write", 1)  # and it has none
    reply = health(tmp_path, url)
    assert reply.status == 503
    assert reply.json["error"]["code"] == "store_unavailable"
    message = reply.json["error"]["message"]
    assert "refuses writes" in message and "min-replicas-to-write" in message
    assert_no_secrets(reply, str(tmp_path))
    admin.config_set("min-replicas-to-write", 0)
    assert health(tmp_path, url).status == 200
    # Its key expires at once: /health leaves nothing behind for long.
    assert all(admin.pttl(key) <= 1000 for key in admin.keys("*health*"))


def test_an_error_no_store_mapped_answers_503_not_500(tmp_path: Path, monkeypatch) -> None:
    """A driver error of a kind the store does not name (here, under GET /status) is
    the store's failure: 503 with Retry-After and a message to retry, never a bare 500."""
    with installed(settings_for(tmp_path)) as rt, Client(spool_app.app) as client:

        def broken(*args: Any, **kwargs: Any) -> Any:
            raise psycopg.OperationalError("consuming input failed: server closed the connection")

        monkeypatch.setattr(rt.store, "get", broken)
        reply = Api(client).get("/status/j_0123456789abcdef0123456789abcdef")
    assert reply.status == 503
    assert reply.json["error"]["code"] == "store_unavailable"
    assert "try again" in reply.json["error"]["message"]
    assert reply.header("Retry-After") == "5"


def test_an_enqueue_that_meets_an_unmapped_store_error_is_503_and_writes_nothing(
    tmp_path: Path, monkeypatch
) -> None:
    with installed(settings_for(tmp_path)) as rt, Client(spool_app.app) as client:
        add = rt.store.add

        def broken(jobs: Any) -> Any:
            raise redis.ResponseError("ERR unexpected reply from a proxy")

        monkeypatch.setattr(rt.store, "add", broken)
        reply = Api(client).post("/enqueue", {"type": "echo", "payload": {}})
        monkeypatch.setattr(rt.store, "add", add)
        assert reply.status == 503
        assert reply.json["error"]["code"] == "store_unavailable"
        assert sum(rt.store.counts().values()) == 0

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

import json
import subprocess
import sys
import time
import urllib.request
from typing import Any

import pytest

from chalicelib.clock import FakeClock
from chalicelib.config import ConfigError
from chalicelib.storage import migrations
from chalicelib.storage.base import StoreUnreachable
from chalicelib.storage.postgres import PostgresStore, connect, parse_url, probe
from tests.factories import new_job
from tests.pg_support import fresh_schema, with_port
from tests.pgbouncer_support import pgbouncer
from tests.procs import ROOT, guarded_env, spool_serve, stop


def _through(direct: str, bouncer: str) -> str:
    """The fresh schema's URL (options and all) through the bouncer's port."""
    from urllib.parse import urlsplit

    return with_port(direct, urlsplit(bouncer).port or 0)


def test_session_mode_keeps_the_schema_and_the_session_settings() -> None:
    with fresh_schema() as direct, pgbouncer("session") as bouncer:
        settings = parse_url(_through(direct, bouncer) + "&statement_timeout=7")
        with connect(settings) as conn:
            row = conn.execute(
                "SELECT current_setting('search_path'), current_setting('statement_timeout'),"
                " current_setting('TimeZone'), current_setting('IntervalStyle')"
            ).fetchone()
            assert row == (settings.schema, "7s", "UTC", "postgres")
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


KEY, TENANT = "pgb-key-0123456789", "pgb-tenant"


def _spool_env(store_url: str) -> dict[str, str]:
    return guarded_env(
        SPOOL_STORE_URL=store_url, SPOOL_API_KEYS=f"{KEY}={TENANT}", SPOOL_DEMO_HANDLERS="true"
    )


def _call(base: str, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(f"{base}{path}", data=data, method=method)
    request.add_header("x-api-key", KEY)
    request.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(request, timeout=30) as reply:
        return json.loads(reply.read())


def test_serve_and_worker_processes_run_a_job_through_session_mode() -> None:
    """`spool serve` enqueues and a `spool worker` runs the job, both through PgBouncer;
    the job is in the URL's schema, not the database's default one."""
    with fresh_schema() as direct, pgbouncer("session") as bouncer:
        url = _through(direct, bouncer)
        env = _spool_env(url)
        served = spool_serve("--no-worker", "--threads", "2", env=env)
        worker = subprocess.Popen(
            [sys.executable, "-m", "local.cli", "worker", "--quiet", "--concurrency", "1"],
            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            job = _call(served.url, "POST", "/enqueue", {"type": "echo", "payload": {"n": 1}})
            deadline = time.monotonic() + 60
            while (state := _call(served.url, "GET", f"/status/{job['id']}")["state"]) != (
                "succeeded"
            ):
                assert worker.poll() is None, worker.stderr.read() if worker.stderr else ""
                assert time.monotonic() < deadline, f"the job is still {state}"
                time.sleep(0.05)
        finally:
            stop(worker)
            stop(served.proc)
        with connect(parse_url(direct)) as conn:
            assert conn.execute("SELECT state FROM jobs").fetchall() == [("succeeded",)]


@pytest.mark.parametrize(
    ("mode", "ignore", "fix"),
    [
        ("transaction", "options", "pool_mode = session"),
        ("session", "", "ignore_startup_parameters = options"),
    ],
)
def test_spool_processes_refuse_to_start_naming_the_fix(mode: str, ignore: str, fix: str) -> None:
    with fresh_schema() as direct, pgbouncer(mode, ignore=ignore) as bouncer:
        env = _spool_env(_through(direct, bouncer))
        for args in (["db", "status"], ["db", "migrate"], ["worker", "--burst", "--quiet"]):
            done = subprocess.run(
                [sys.executable, "-m", "local.cli", *args],
                cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
            )  # fmt: skip
            assert done.returncode != 0, (args, done.stderr)
            assert fix in done.stderr, (args, done.stderr)
            assert "Check that the server is running" not in done.stderr


def _documented_settings() -> dict[str, str]:
    """The [pgbouncer] settings of docs/self-hosting.md's tested example."""
    text = (ROOT / "docs" / "self-hosting.md").read_text()
    block = text.split("### PgBouncer", 1)[1].split("```ini\n", 1)[1].split("```", 1)[0]
    section = block.split("[pgbouncer]", 1)[1]
    pairs = (line.split("=", 1) for line in section.splitlines() if "=" in line)
    return {k.strip(): v.strip() for k, v in pairs}


def test_the_documented_pgbouncer_settings_work() -> None:
    documented = _documented_settings()
    assert documented["pool_mode"] == "session"
    with (
        fresh_schema() as direct,
        pgbouncer(documented["pool_mode"], documented["ignore_startup_parameters"]) as bouncer,
    ):
        store = PostgresStore(parse_url(_through(direct, bouncer)), FakeClock())
        try:
            assert store.counts() == {}
        finally:
            store.close()

"""The Postgres store beyond the shared contract: migrations, concurrent claimers,
LISTEN/NOTIFY, reconnects and outages, all against the real server."""

from __future__ import annotations

import multiprocessing
import threading
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import psycopg
import pytest
from chalice.test import Client

from chalicelib.clock import FakeClock
from chalicelib.errors import StoreNotMigrated, StoreUnavailable
from chalicelib.handlers import Registry
from chalicelib.models import Completion, JobQuery, JobState
from chalicelib.service import EnqueueRequest, Service
from chalicelib.storage import migrations, open_store
from chalicelib.storage import postgres as pg
from chalicelib.storage.postgres import PostgresStore, from_url, parse_url
from chalicelib.worker import Worker, WorkerConfig
from tests.factories import new_job, token
from tests.pg_proxy import pg_proxy
from tests.pg_support import admin_connect, fresh_schema, terminate, with_port
from tests.threads import run_alone, run_together

pytestmark = pytest.mark.postgres

NOT_MIGRATED = "database is not migrated: run `spool db migrate`"


def schema_of(url: str) -> str:
    schema = parse_url(url).schema
    assert schema is not None
    return schema


def wait_until(
    predicate: Callable[[], object], timeout: float = 30.0, interval: float = 0.05
) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())


@pytest.fixture
def url() -> Iterator[str]:
    with fresh_schema() as migrated:
        yield migrated


@pytest.fixture
def store(url: str) -> Iterator[PostgresStore]:
    opened = from_url(url)
    yield opened
    opened.close()


def succeeded(store: PostgresStore) -> int:
    return store.counts().get(("default", JobState.SUCCEEDED), 0)


# -- migrations ---------------------------------------------------------------


def test_unmigrated_database_is_refused_with_what_to_run() -> None:
    with fresh_schema(migrate=False) as url:
        with pytest.raises(StoreNotMigrated) as refused:
            open_store(url)
        assert refused.value.message.startswith(NOT_MIGRATED)
        schema = url.split("schema=")[1].split("&")[0]
        assert f"schema {schema!r} has no Spool tables" in refused.value.message
        assert refused.value.status == 503


def test_unmigrated_default_schema_says_so_and_how_to_name_another() -> None:
    """Without schema= the message used to read "schema None has no Spool tables"."""
    from urllib.parse import urlsplit, urlunsplit

    from tests.pg_support import BASE_URL, drop_database_later, new_schema_name

    database = new_schema_name()
    admin = admin_connect()
    admin.execute(f"CREATE DATABASE {database}")
    try:
        parts = urlsplit(BASE_URL)
        url = urlunsplit((parts.scheme, parts.netloc, f"/{database}", "", ""))
        with pytest.raises(StoreNotMigrated) as refused:
            open_store(url)
        message = refused.value.message
        assert message.startswith(NOT_MIGRATED) and "None" not in message
        assert "the database's default schema" in message and "?schema=NAME" in message
    finally:
        admin.close()
        drop_database_later(database)


def test_migrate_applies_each_version_once(url: str) -> None:
    settings = parse_url(url)
    with pg.connect(settings) as conn:
        assert migrations.migrate(conn, settings.schema) == []  # fixture already migrated
        status = migrations.status(conn)
        assert status.pending == []
        assert status.current == migrations.latest_version() >= 1
        rows = conn.execute("SELECT version FROM schema_migrations ORDER BY version").fetchall()
    assert [r[0] for r in rows] == [m.version for m in migrations.available()]


def test_db_status_names_a_schema_a_newer_spool_migrated(monkeypatch, capsys) -> None:
    """It said "up to date (version N+1)" for versions this Spool has never heard of."""
    from local.cli import main

    with fresh_schema() as url:
        newer = migrations.latest_version() + 1
        with psycopg.connect(pg.parse_url(url).conninfo, autocommit=True) as conn:
            conn.execute(f"SET search_path TO {schema_of(url)}")
            conn.execute(
                "INSERT INTO schema_migrations (version, name) VALUES (%s, 'from_the_future')",
                (newer,),
            )
        monkeypatch.setenv("SPOOL_STORE_URL", url)
        assert main(["db", "status"]) == 0
        out, err = capsys.readouterr()
        assert f"{newer:04d}_(unknown to this Spool)" in out
        assert f"at version {newer}, newer than this Spool" in err
        assert "up to date" not in err


def test_concurrent_migrations_take_turns() -> None:
    with fresh_schema(migrate=False) as url:
        settings = parse_url(url)
        ran: list[int] = []

        def run() -> None:
            with pg.connect(settings) as conn:
                ran.extend(m.version for m in migrations.migrate(conn, settings.schema))

        errors = run_together(run, 3, timeout=30)
        assert errors == []
        assert sorted(ran) == [m.version for m in migrations.available()]
        open_store(url).close()


def test_cli_refuses_then_migrates(monkeypatch, capsys) -> None:
    from local.cli import main

    with fresh_schema(migrate=False) as url:
        monkeypatch.setenv("SPOOL_STORE_URL", url)
        assert main(["worker", "--burst", "--quiet"]) == 1
        assert NOT_MIGRATED in capsys.readouterr().err
        assert main(["db", "status"]) == 3
        assert "pending" in capsys.readouterr().out
        assert main(["db", "migrate"]) == 0
        assert "applied 0001_initial" in capsys.readouterr().err
        assert main(["db", "migrate"]) == 0
        assert "already up to date" in capsys.readouterr().err
        assert main(["db", "status"]) == 0
        assert main(["enqueue", "echo", "--payload", '{"a": 1}']) == 0
        assert main(["worker", "--burst", "--quiet"]) == 0
        store = open_store(url)
        try:
            assert succeeded(store) == 1  # type: ignore[arg-type]
        finally:
            store.close()


def test_db_command_on_other_stores_has_nothing_to_do(monkeypatch, capsys) -> None:
    from local.cli import main

    monkeypatch.setenv("SPOOL_STORE_URL", "memory://")
    assert main(["db", "migrate"]) == 0
    assert "nothing to migrate" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["migrate", "status"])
def test_db_command_on_an_unknown_scheme_says_so_like_every_other_command(
    monkeypatch, capsys, command: str
) -> None:
    from local.cli import main

    monkeypatch.setenv("SPOOL_STORE_URL", "mysql://db.internal/jobs")
    assert main(["db", command]) == 2
    err = capsys.readouterr().err
    assert "unknown store URL scheme 'mysql'" in err and "nothing to migrate" not in err


def test_an_unmigrated_store_tells_the_fix_once() -> None:
    from local.cli_errors import explain, line

    failure = explain(StoreNotMigrated(NOT_MIGRATED))
    said = line(failure.problem, failure.fix)
    assert said.lower().count("spool db migrate") == 1, said


# -- URL options ----------------------------------------------------------------


def test_url_options_are_ours_and_the_rest_reach_libpq() -> None:
    settings = parse_url(
        "postgresql+psycopg://u@h:6543/db?schema=tenant_a&pool_max=7&pool_min=2"
        "&pool_timeout=1.5&sslmode=disable"
    )
    assert (settings.schema, settings.pool_min, settings.pool_max) == ("tenant_a", 2, 7)
    assert settings.pool_timeout == 1.5
    assert settings.channel == "spool_tenant_a"
    info = psycopg.conninfo.conninfo_to_dict(settings.conninfo)
    assert info["sslmode"] == "disable" and info["host"] == "h" and info["port"] == "6543"
    assert "search_path=tenant_a" in str(info["options"])
    assert "schema" not in info and "pool_max" not in info
    for bad in ("Robert'); DROP", "UPPER", "a" * 60):
        with pytest.raises(ValueError):
            parse_url(f"postgresql://h/db?schema={bad}")
    with pytest.raises(ValueError):
        parse_url("postgresql://h/db?pool_min=5&pool_max=2")


def test_statement_timeout_bounds_every_session_and_the_url_s_own_options_win() -> None:
    def options(url: str) -> str:
        return str(psycopg.conninfo.conninfo_to_dict(parse_url(url).conninfo).get("options", ""))

    default = parse_url("postgresql://h/db")
    assert default.statement_timeout == pg.STATEMENT_TIMEOUT
    assert default.call_deadline == pg.STATEMENT_TIMEOUT + pg.CUT_GRACE
    assert "-c statement_timeout=30000 -c idle_in_transaction_session_timeout=30000" in options(
        "postgresql://h/db"
    )
    assert "statement_timeout=1500" in options("postgresql://h/db?statement_timeout=1.5")
    off = parse_url("postgresql://h/db?statement_timeout=0")
    assert off.call_deadline is None and "statement_timeout" not in options(off.url)
    # libpq's own options come after Spool's: on the server the last value wins
    given = options("postgresql://h/db?options=-c%20statement_timeout%3D900")
    assert given.index("statement_timeout=30000") < given.index("statement_timeout=900")
    assert "connect_timeout" in psycopg.conninfo.conninfo_to_dict(default.conninfo)
    for bad in ("-1", "soon", "nan", "inf", "86400"):
        with pytest.raises(ValueError, match="statement_timeout"):
            parse_url(f"postgresql://h/db?statement_timeout={bad}")


def test_migrations_are_not_bound_by_the_store_s_statement_timeout(url: str) -> None:
    """Waiting for another migrator's lock, or an index over millions of jobs, takes longer."""
    settings = parse_url(url + "&statement_timeout=0.5")
    with pg.connect(settings) as conn:
        assert conn.execute("SHOW statement_timeout").fetchone() == ("500ms",)
        migrations.migrate(conn, settings.schema)
        assert conn.execute("SHOW statement_timeout").fetchone() == ("0",)


# -- claims under concurrency ---------------------------------------------------


def test_claim_skips_rows_another_transaction_holds(store: PostgresStore, url: str) -> None:
    jobs = [store.add([new_job(FakeClock(store.clock.now()))])[0].job for _ in range(3)]
    holder = psycopg.connect(parse_url(url).conninfo)  # not autocommit: holds its lock
    try:
        holder.execute("SELECT id FROM jobs WHERE id = %s FOR UPDATE", (jobs[0].id,))
        got: list[list[str]] = []
        claimer = threading.Thread(target=lambda: got.append([j.id for j in store.claim(10, 30)]))
        claimer.start()
        claimer.join(20)
        assert not claimer.is_alive(), "claim waited on a locked row instead of skipping it"
        assert sorted(got[0]) == sorted(j.id for j in jobs[1:])
    finally:
        holder.rollback()
        holder.close()
    assert [j.id for j in store.claim(10, 30)] == [jobs[0].id]


def test_concurrent_claimers_never_take_the_same_job(url: str) -> None:
    total = 1200
    seed = from_url(url)
    clock = FakeClock(seed.clock.now())
    for start in range(0, total, 400):
        seed.add([new_job(clock, payload={"i": i}) for i in range(start, start + 400)])
    claimed: list[list[str]] = [[] for _ in range(4)]
    errors: list[BaseException] = []

    def claimer(n: int) -> None:
        store = from_url(url)
        try:
            while True:
                jobs = store.claim(7, 60)
                if not jobs:
                    return
                claimed[n].extend(j.id for j in jobs)
                results = [Completion(j.id, token(j), JobState.SUCCEEDED) for j in jobs]
                assert store.finish(results) == [True] * len(jobs)
        except BaseException as exc:
            errors.append(exc)
        finally:
            store.close()

    threads = [threading.Thread(target=claimer, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    try:
        assert errors == []
        every = [i for ids in claimed for i in ids]
        assert len(every) == total and len(set(every)) == total
        assert sum(1 for ids in claimed if ids) >= 2  # they really did run side by side
        assert succeeded(seed) == total
        finished = {k.event: v for k, v in seed.counters().items()}
        assert finished["succeeded"] == total and finished["enqueued"] == total
    finally:
        seed.close()


def _claim_in_process(url: str, out: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    store = from_url(url)
    ids: list[str] = []
    try:
        while jobs := store.claim(5, 60):
            ids.extend(j.id for j in jobs)
            store.finish([Completion(j.id, token(j), JobState.SUCCEEDED) for j in jobs])
    finally:
        store.close()
        out.put(ids)


def test_claimers_in_separate_processes_never_overlap(url: str) -> None:
    seed = from_url(url)
    clock = FakeClock(seed.clock.now())
    added = {r.job.id for r in seed.add([new_job(clock) for _ in range(600)])}
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    procs = [ctx.Process(target=_claim_in_process, args=(url, out)) for _ in range(3)]
    for p in procs:
        p.start()
    try:
        results = [out.get(timeout=120) for _ in procs]
    finally:
        for p in procs:
            p.join(30)
        seed.close()
    every = [i for ids in results for i in ids]
    assert len(every) == len(set(every)) == 600
    assert set(every) == added


def test_claims_walk_the_due_index_however_many_jobs_finished(store: PostgresStore) -> None:
    """The plan, not the clock: a claim reads waiting jobs in claim order and stops
    after N; it never scans the finished ones."""
    now = store.clock.now()

    def fill(conn: psycopg.Connection) -> None:
        conn.execute(
            "INSERT INTO jobs (id, tenant, type, queue, priority, payload, state, attempts,"
            " max_attempts, run_at, created_at, updated_at, finished_at, result)"
            " SELECT 'j_' || lpad(to_hex(g), 32, '0'), 'default', 'echo', 'default', 0, '{}',"
            " CASE WHEN g <= 50000 THEN 'succeeded' ELSE 'queued' END, 1, 3, %(now)s, %(now)s,"
            " %(now)s, CASE WHEN g <= 50000 THEN %(now)s::timestamptz END, 'null'"
            " FROM generate_series(1, 55000) AS g",
            {"now": now},
        )
        conn.execute("ANALYZE jobs")

    store._run(fill)
    inner = pg.CLAIM_SQL.format(filters="").split("WITH picked AS (", 1)[1].split(") UPDATE")[0]
    plan = store._run(
        lambda conn: "\n".join(
            str(r[0])
            for r in conn.execute(f"EXPLAIN {inner}", {"now": now, "limit": 10}).fetchall()
        )
    )
    assert "Index Scan using jobs_due" in plan, plan
    assert "Seq Scan" not in plan and "Sort" not in plan, plan
    assert len(store.claim(10, 30)) == 10


# -- data Postgres cannot hold as is -------------------------------------------


def test_text_postgres_refuses_round_trips(store: PostgresStore) -> None:
    clock = FakeClock(store.clock.now())
    odd = "nul\x00 and \ufffe and h\xe9llo \U0001f600"
    [added] = store.add([new_job(clock, idempotency_key=odd, tenant="t\x00")])
    [again] = store.add([new_job(clock, idempotency_key=odd, tenant="t\x00")])
    assert added.created and not again.created and again.job.id == added.job.id
    [job] = store.claim(1, 30)
    assert job.idempotency_key == odd and job.tenant == "t\x00"
    error = "ValueError: bad byte \x00 in \udcff"
    store.finish([Completion(job.id, token(job), JobState.DEAD, error=error)])
    done = store.get(job.id, tenant="t\x00")
    assert done is not None and done.last_error == error
    assert store.get(job.id, tenant="t") is None
    # Ordinary text is stored as it is, so SQL users see what they expect.
    store.add([new_job(clock, idempotency_key="h\xe9llo")])
    raw = store._run(
        lambda conn: conn.execute(
            "SELECT count(*) FROM jobs WHERE idempotency_key = %s", ("h\xe9llo",)
        ).fetchone()
    )
    assert raw is not None and raw[0] == 1


def test_purge_deletes_in_bounded_batches(store: PostgresStore, monkeypatch) -> None:
    monkeypatch.setattr(pg, "PURGE_BATCH", 3)
    clock = FakeClock(store.clock.now())
    store.clock = clock
    store.add([new_job(clock) for _ in range(10)])
    jobs = store.claim(10, 30)
    store.finish([Completion(j.id, token(j), JobState.SUCCEEDED) for j in jobs])
    clock.advance(60)
    assert store.purge(clock.now(), limit=7) == 7
    assert store.purge(clock.now(), limit=100) == 3
    assert store.list_jobs(JobQuery()).jobs == []


# -- LISTEN / NOTIFY --------------------------------------------------------------


def _wait_in_thread(notifier: pg.PgNotifier, timeout: float) -> tuple[threading.Thread, list[Any]]:
    woke: list[bool] = []
    thread = threading.Thread(target=lambda: woke.append(notifier.wait(timeout)))
    thread.start()
    return thread, woke


def test_an_add_wakes_a_listening_worker_in_another_process_s_store(url: str) -> None:
    listener, writer = from_url(url), from_url(url)
    try:
        assert listener.notifier.wait(0) is False  # subscribe; nothing pending
        thread, woke = _wait_in_thread(listener.notifier, 30)
        time.sleep(0.1)
        writer.add([new_job(FakeClock(writer.clock.now()))])
        thread.join(35)
        assert woke == [True]
        assert listener.notifier.wait(0.2) is False  # that wake-up was consumed
    finally:
        listener.close()
        writer.close()


def test_a_notification_sent_between_waits_is_not_lost(store: PostgresStore, url: str) -> None:
    other = from_url(url)
    try:
        store.notifier.wait(0)
        other.add([new_job(FakeClock(other.clock.now()))])
        time.sleep(0.2)  # arrives while nobody waits
        assert store.notifier.wait(10) is True
    finally:
        other.close()


def test_redrive_wakes_and_notify_wakes(store: PostgresStore, url: str) -> None:
    clock = FakeClock(store.clock.now())
    store.add([new_job(clock)])
    [job] = store.claim(1, 30)
    store.finish([Completion(job.id, token(job), JobState.DEAD, error="x")])
    other = from_url(url)
    try:
        other.notifier.wait(0)
        assert [j.id for j in store.redrive([job.id])] == [job.id]
        assert other.notifier.wait(10) is True
        store.notifier.notify()
        assert other.notifier.wait(10) is True
    finally:
        other.close()


def test_wake_ups_stay_inside_their_schema(store: PostgresStore) -> None:
    with fresh_schema() as elsewhere:
        other = from_url(elsewhere)
        try:
            other.notifier.wait(0)
            store.add([new_job(FakeClock(store.clock.now()))])
            assert other.notifier.wait(0.5) is False
        finally:
            other.close()


def test_close_and_interrupt_wake_a_waiter_at_once(store: PostgresStore) -> None:
    store.notifier.wait(0)
    thread, woke = _wait_in_thread(store.notifier, 60)
    time.sleep(0.1)
    store.notifier.interrupt()
    thread.join(10)
    assert woke == [True]
    thread, woke = _wait_in_thread(store.notifier, 60)
    time.sleep(0.1)
    store.notifier.close()
    thread.join(10)
    assert not thread.is_alive()


# -- connections lost and outages -------------------------------------------------


def test_pool_replaces_connections_the_server_killed(store: PostgresStore, url: str) -> None:
    job = store.add([new_job(FakeClock(store.clock.now()))])[0].job
    before = store._run(lambda conn: conn.info.backend_pid)
    assert terminate(schema_of(url)) >= 1
    time.sleep(0.2)
    assert store.get(job.id) is not None  # no error: the dead connection was replaced
    after = store._run(lambda conn: conn.info.backend_pid)
    assert after != before
    assert len(store.claim(5, 30)) == 1  # writes work too


def test_notifier_reconnects_after_its_connection_is_killed(store: PostgresStore, url) -> None:
    store.notifier.wait(0)
    assert terminate(schema_of(url)) >= 1
    # The first wait notices the loss; a wake-up is reported since some may be lost.
    assert wait_until(lambda: store.notifier.wait(0.5), timeout=15)
    other = from_url(url)
    try:
        assert store.notifier.wait(0.3) is False
        other.add([new_job(FakeClock(other.clock.now()))])
        assert store.notifier.wait(10) is True
    finally:
        other.close()


@pytest.fixture
def registry(handlers: Registry) -> Registry:
    return handlers


def _start_worker(
    store: PostgresStore, registry: Registry, **config
) -> tuple[Worker, threading.Thread]:
    worker = Worker(
        store, registry, WorkerConfig(concurrency=4, lease_seconds=30, idle_poll=0.5, **config)
    )
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    return worker, thread


def test_worker_carries_on_after_the_server_kills_its_connections(
    url: str, registry: Registry
) -> None:
    store = from_url(url)
    service = Service(store, registry)
    worker, thread = _start_worker(store, registry)
    try:
        service.enqueue([EnqueueRequest(type="echo", payload={"i": i}) for i in range(100)], "t")
        assert wait_until(lambda: succeeded(store) == 100)
        for _ in range(3):
            terminate(schema_of(url))
            time.sleep(0.1)
        service.enqueue([EnqueueRequest(type="echo", payload={"i": i}) for i in range(100)], "t")
        assert wait_until(lambda: succeeded(store) == 200)
        assert thread.is_alive()
    finally:
        worker.stop()
        thread.join(30)
        store.close()
    assert not thread.is_alive()
    assert worker.stats.succeeded == 200


def test_outage_raises_store_unavailable_then_recovers(url: str, registry: Registry) -> None:
    with pg_proxy() as proxy:
        store = from_url(with_port(url, proxy.port) + "&pool_timeout=1")
        service = Service(store, registry)
        try:
            job = service.enqueue([EnqueueRequest(type="echo")], "t")[0].job
            proxy.cut()
            with pytest.raises(StoreUnavailable) as down:
                service.status(job.id, "t")
            assert down.value.status == 503 and down.value.retry_after >= 1
            with pytest.raises(StoreUnavailable):
                service.enqueue([EnqueueRequest(type="echo")], "t")
            with pytest.raises(StoreUnavailable):
                store.claim(5, 30)
            assert store.notifier.wait(0.2) in (True, False)  # never raises
            proxy.restore()
            assert wait_until(lambda: _reachable(store), timeout=20)
            assert service.status(job.id, "t").id == job.id
        finally:
            store.close()


def _reachable(store: PostgresStore) -> bool:
    try:
        store.counts()
        return True
    except StoreUnavailable:
        return False


def test_api_answers_503_with_retry_after_during_an_outage(url: str, tmp_path) -> None:
    import app as spool_app
    from tests.apikit import Api, installed, settings_for

    with pg_proxy() as proxy:
        settings = settings_for(
            tmp_path, store_url=with_port(url, proxy.port) + "&pool_timeout=1", demo_handlers=True
        )
        with installed(settings), Client(spool_app.app, stage_name="local") as client:
            api = Api(client)
            job_id = api.enqueue({"type": "echo", "payload": {"x": 1}})
            proxy.cut()
            for reply in (
                api.get(f"/status/{job_id}"),
                api.post("/enqueue", {"type": "echo"}),
                api.get("/jobs"),
            ):
                assert reply.status == 503, reply.body
                assert reply.error_code == "store_unavailable"
                assert int(reply.header("Retry-After") or "0") >= 1
            proxy.restore()
            assert wait_until(lambda: api.get(f"/status/{job_id}").status == 200, timeout=20)


def test_worker_rides_out_an_outage(url: str, registry: Registry) -> None:
    with pg_proxy() as proxy:
        store = from_url(with_port(url, proxy.port) + "&pool_timeout=1")
        service = Service(store, registry)
        worker, thread = _start_worker(store, registry, sync_finish=True)
        try:
            service.enqueue([EnqueueRequest(type="echo") for _ in range(50)], "t")
            assert wait_until(lambda: succeeded(store) == 50)
            proxy.cut()
            time.sleep(2.5)  # the worker's claims and polls fail meanwhile
            assert thread.is_alive()
            proxy.restore()
            assert wait_until(lambda: _reachable(store), timeout=20)
            service.enqueue([EnqueueRequest(type="echo") for _ in range(50)], "t")
            assert wait_until(lambda: succeeded(store) == 100, timeout=60)
        finally:
            worker.stop()
            thread.join(30)
            store.close()
        assert not thread.is_alive()


def test_a_server_that_swallows_every_byte_fails_calls_instead_of_holding_them(
    url: str, registry: Registry
) -> None:
    """Keepalives and tcp_user_timeout never fire while the server's kernel acknowledges
    every byte: an enqueue hung for minutes, and a worker's claim for good."""
    with pg_proxy() as proxy:
        # Two connections, both made before the server goes quiet: the status call's is
        # given up, and with it the other (a silent connection says those made before it
        # are silent too: tests/test_chaos_s51d_silent_drop.py), so the enqueue waits for
        # a new one, which hangs connecting: it is never sent, and says so.
        store = from_url(
            with_port(url, proxy.port) + "&pool_min=2&pool_timeout=1&statement_timeout=1"
        )
        service = Service(store, registry)
        try:
            job = service.enqueue([EnqueueRequest(type="echo")], "t")[0].job
            store._pool.wait(timeout=20)  # both connections made
            proxy.swallow()
            done, raised = run_alone(lambda: service.status(job.id, "t"), 30)
            assert done and isinstance(raised, StoreUnavailable), raised
            assert "gave no answer within 6 s" in raised.message and raised.status == 503
            done, raised = run_alone(
                lambda: service.enqueue([EnqueueRequest(type="echo")], "t"), 30
            )
            assert done and isinstance(raised, StoreUnavailable), raised
            assert "cannot be reached" in raised.message and raised.status == 503
            proxy.restore()
            assert wait_until(lambda: _reachable(store), timeout=20)
            assert service.status(job.id, "t").id == job.id
        finally:
            proxy.restore()
            store.close()


def test_a_worker_whose_server_swallows_every_byte_still_stops(
    url: str, registry: Registry
) -> None:
    """Its claim waited on the socket for good; SIGTERM (worker.stop) could not end it."""
    with pg_proxy() as proxy:
        store = from_url(with_port(url, proxy.port) + "&pool_timeout=1&statement_timeout=1")
        worker, thread = _start_worker(store, registry)
        try:
            Service(store, registry).enqueue([EnqueueRequest(type="echo")], "t")
            assert wait_until(lambda: succeeded(store) == 1)
            proxy.swallow()
            time.sleep(1.5)  # the worker's next claim or poll is in flight, unanswered
            worker.stop()
            thread.join(30)
            assert not thread.is_alive()
        finally:
            proxy.restore()
            worker.stop()
            store.close()


def test_a_statement_waiting_on_a_lock_is_cancelled_and_nothing_is_stored(
    store: PostgresStore, url: str, registry: Registry
) -> None:
    bounded = from_url(url + "&statement_timeout=0.5")
    service = Service(bounded, registry)
    holder = admin_connect()
    try:
        holder.execute(f"SET search_path = {schema_of(url)}")
        with holder.transaction():
            holder.execute("LOCK TABLE jobs IN ACCESS EXCLUSIVE MODE")
            with pytest.raises(StoreUnavailable) as held:
                service.enqueue([EnqueueRequest(type="echo")], "t")
            assert "cancelled the call (canceling statement due to statement timeout)" in (
                held.value.message
            )
        assert sum(store.counts().values()) == 0
        service.enqueue([EnqueueRequest(type="echo")], "t")
        assert sum(store.counts().values()) == 1
    finally:
        holder.close()
        bounded.close()


def test_store_on_an_unreachable_server_is_unavailable() -> None:
    with pg_proxy() as proxy:
        proxy.cut()
        base = with_port("postgresql://postgres@127.0.0.1/test", proxy.port)
        with pytest.raises(StoreUnavailable):
            open_store(base + "?schema=spool_nowhere&pool_timeout=1")


def test_admin_connection_is_reachable() -> None:
    """A guard: in CI these tests must run, so an unreachable server fails here."""
    conn = admin_connect()
    try:
        row = conn.execute("SELECT 1").fetchone()
        assert row == (1,)
    finally:
        conn.close()


def test_lease_times_are_exact_microseconds(store: PostgresStore) -> None:
    clock = FakeClock(store.clock.now().replace(microsecond=123457))
    store.clock = clock
    store.add([new_job(clock)])
    [job] = store.claim(1, 0.000001)
    assert job.lease_expires_at == clock.now() + timedelta(microseconds=1)
    assert store.next_due_at() == job.lease_expires_at
    clock.advance(0.000001)
    [again] = store.claim(1, 30)
    assert again.attempts == 2


# -- a server that is not there: one clear error -------------------------------


def _closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # closed again on exit: nothing listens there


def _unreachable_url() -> tuple[str, int]:
    port = _closed_port()
    return f"postgresql://spool:s3cret@127.0.0.1:{port}/test?schema=spool_nowhere", port


def test_a_wrong_port_is_one_error_naming_the_redacted_url(caplog) -> None:
    from chalicelib.storage.base import StoreUnreachable

    url, port = _unreachable_url()
    caplog.set_level("DEBUG")
    with pytest.raises(StoreUnreachable) as refused:
        open_store(url)
    message = refused.value.message
    assert isinstance(refused.value, StoreUnavailable) and refused.value.status == 503
    assert f"postgresql://spool:***@127.0.0.1:{port}/test" in message
    assert "s3cret" not in message and "\n" not in message
    assert "refused" in message.lower() and "check that the server is running" in message.lower()
    # No pool retrying in the background, logging a connection error per attempt.
    assert [r.getMessage() for r in caplog.records if r.name.startswith("psycopg")] == []


def test_the_cli_prints_the_unreachable_store_as_one_line(monkeypatch, capsys) -> None:
    from local.cli import main

    url, port = _unreachable_url()
    monkeypatch.setenv("SPOOL_STORE_URL", url)
    assert main(["worker", "--burst", "--quiet"]) != 0
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert f"127.0.0.1:{port}" in err and "s3cret" not in err and "Traceback" not in err


def test_http_clients_get_a_plain_503_when_the_store_cannot_be_opened(monkeypatch) -> None:
    from chalicelib import runtime as runtime_module
    from chalicelib.api import routes
    from chalicelib.api.http import ApiRequest

    url, port = _unreachable_url()
    monkeypatch.setenv("SPOOL_STORE_URL", url)
    monkeypatch.setenv("SPOOL_API_KEYS", "k-0123456789abcdef=t")
    runtime_module.reset(None)  # a cold start: the runtime is built by this request
    try:
        reply = routes.handle("health", ApiRequest())
    finally:
        runtime_module.reset(None)
    assert reply.status == 503 and int(reply.headers["Retry-After"]) >= 1
    assert '"store_unavailable"' in reply.body
    assert str(port) not in reply.body and "127.0.0.1" not in reply.body


def test_a_write_whose_reply_was_lost_says_it_may_have_been_applied(
    store: PostgresStore,
) -> None:
    """Only reads are retried on a lost connection; a write's 503 now says why: it may
    have committed, so a blind retry of an enqueue could make the job twice."""

    def lost(conn: object) -> None:
        raise psycopg.OperationalError("server closed the connection unexpectedly")

    with pytest.raises(StoreUnavailable) as write:
        store._run(lost)
    assert "this change may have been applied" in write.value.message
    with pytest.raises(StoreUnavailable) as read:
        store._run(lost, read=True)
    assert read.value.message == "the database connection failed; try again shortly"

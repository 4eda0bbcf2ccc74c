"""Limits and fair turns end to end: real workers, real processes, a real SQLite
file and a real Postgres, the limits declared beside the handler or in settings."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest

from chalicelib.config import Settings
from chalicelib.handlers import Registry
from chalicelib.ids import new_job_id
from chalicelib.limit_settings import claim_policy
from chalicelib.limits import ClaimPolicy, Limit, Rate
from chalicelib.middleware import Middleware
from chalicelib.models import Job, JobState, NewJob
from chalicelib.storage import open_store
from chalicelib.worker import Worker, WorkerConfig, _Attempt
from tests.limit_log import LIMITED_TYPE, LOG_DIR_ENV, most_at_once
from tests.pg_support import fresh_schema, sqlite_or_postgres
from tests.procs import ROOT, guarded_env, stop


def test_handler_declares_limits_and_settings_override_them() -> None:
    registry = Registry()

    @registry.handler("resize", concurrency=4, rate="10/s")
    def resize(payload: dict[str, Any]) -> None: ...

    @registry.handler("plain")
    def plain(payload: dict[str, Any]) -> None: ...

    assert registry.limits() == (Limit("type", "resize", 4, Rate(10, 1.0)),)
    settings = Settings(extra={"SPOOL_LIMITS": json.dumps({"type:resize": {"concurrency": 1}})})
    policy = claim_policy(settings, registry.limits())
    assert policy is not None and policy.limits == (Limit("type", "resize", 1),)
    lifted = Settings(extra={"SPOOL_LIMITS": '{"type:resize": null}'})
    assert claim_policy(lifted, registry.limits()) is None  # nothing left: no policy at all
    fair = Settings(extra={"SPOOL_FAIR_TENANTS": "true", "SPOOL_TENANT_WEIGHTS": '{"a": 2}'})
    fair_policy = claim_policy(fair)
    assert fair_policy is not None and fair_policy.fair and fair_policy.weight("a") == 2
    with pytest.raises(ValueError, match="rate"):
        registry.handler("bad", rate="ten a second")


@pytest.mark.parametrize(
    "value, complaint",
    [
        ('{"resize": {"concurrency": 2}}', "queue:NAME"),
        ('{"type:x": {"concurrency": 0}}', "concurrency"),
        ('{"type:x": {"concurrency": true}}', "concurrency"),
        ('{"type:x": {"rate": "5/0s"}}', "window"),
        ('{"type:x": {"rate": "0/s"}}', "count"),
        ('{"type:x": {"speed": 3}}', "unknown"),
        ('{"type:x": {}}', "set concurrency"),
        ("[]", "object"),
        ("{", "JSON"),
        # A key given twice: the last won, silently dropping the operator's first cap.
        ('{"type:x": {"concurrency": 1}, "type:x": {"rate": "5/s"}}', "twice"),
    ],
)
def test_bad_limit_settings_name_the_problem(value: str, complaint: str) -> None:
    with pytest.raises(ValueError, match=complaint) as caught:
        claim_policy(Settings(extra={"SPOOL_LIMITS": value}))
    assert "SPOOL_LIMITS" in str(caught.value)


@pytest.mark.parametrize(
    "name, value",
    [
        ("SPOOL_TENANT_LIMITS", '{"acme": {"rate": "5/s"}, "acme": {"backlog": 10}}'),
        ("SPOOL_TENANT_WEIGHTS", '{"acme": 3, "acme": 1}'),
    ],
)
def test_a_tenant_named_twice_in_limit_settings_is_refused(name: str, value: str) -> None:
    from chalicelib.limit_settings import tenant_limits

    settings = Settings(extra={name: value, "SPOOL_FAIR_TENANTS": "true"})
    with pytest.raises(ValueError, match="twice") as caught:
        tenant_limits(settings) if name == "SPOOL_TENANT_LIMITS" else claim_policy(settings)
    assert name in str(caught.value)


class ClaimCounter(Middleware):
    def __init__(self) -> None:
        self.claims = 0
        self.holds = 0

    def after_claim(self, claimed, holds) -> None:
        self.claims += 1
        self.holds += len(holds)


def _jobs(
    n: int, type_: str, tenant: str = "t", payload: dict[str, Any] | None = None
) -> list[NewJob]:
    from datetime import UTC, datetime

    now = datetime.now(UTC)
    return [
        NewJob(id=new_job_id(), type=type_, payload=payload or {}, run_at=now, tenant=tenant)
        for _ in range(n)
    ]


def test_a_worker_keeps_a_concurrency_limit_and_does_not_spin_while_held(tmp_path: Path) -> None:
    registry = Registry()
    running = [0]
    peak = [0]
    import threading

    lock = threading.Lock()
    release = threading.Event()

    @registry.handler("gated", concurrency=2)
    def gated(payload: dict[str, Any]) -> None:
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        release.wait(10)
        with lock:
            running[0] -= 1

    store = open_store(f"sqlite:///{tmp_path}/spool.db")
    store.add(_jobs(6, "gated"))
    counter = ClaimCounter()
    policy = claim_policy(Settings(), registry.limits())
    worker = Worker(store, registry, WorkerConfig(concurrency=8, policy=policy), [counter])
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while counter.holds == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        claims_before = counter.claims
        time.sleep(0.5)  # two running, four held: the worker looks again now and then
        assert counter.claims - claims_before < 40, "the worker spins while jobs are held"
        release.set()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if store.state_counts().get(("default", JobState.SUCCEEDED)) == 6:
                break
            time.sleep(0.02)
        assert store.state_counts() == {("default", JobState.SUCCEEDED): 6}
        assert peak[0] == 2
    finally:
        worker.stop()
        thread.join(10)
        store.close()


def test_a_rate_limit_spaces_starts_across_the_window(tmp_path: Path) -> None:
    registry = Registry()

    @registry.handler("partner", rate="4/s")
    def partner(payload: dict[str, Any]) -> None: ...

    store = open_store(f"sqlite:///{tmp_path}/spool.db")
    ids = [r.job.id for r in store.add(_jobs(10, "partner"))]
    policy = claim_policy(Settings(), registry.limits())
    worker = Worker(store, registry, WorkerConfig(concurrency=4, policy=policy))
    import threading

    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            jobs = [store.get(i) for i in ids]
            if all(j is not None and j.state is JobState.SUCCEEDED for j in jobs):
                break
            time.sleep(0.05)
        starts = sorted(j.started_at for j in jobs if j is not None and j.started_at)
        assert len(starts) == 10
        for i, first in enumerate(starts):
            within = [s for s in starts[i:] if (s - first).total_seconds() < 1.0]
            assert len(within) <= 4, f"{len(within)} starts within one second"
        assert all(j is not None and j.attempts == 1 for j in jobs)  # holds spent no attempt
    finally:
        worker.stop()
        thread.join(10)
        store.close()


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    with sqlite_or_postgres(request.param, tmp_path) as url:
        yield url


def test_a_concurrency_limit_holds_across_worker_processes(store_url: str, tmp_path: Path) -> None:
    url = store_url
    log_dir = tmp_path / "attempts"
    log_dir.mkdir()
    store = open_store(url)
    try:
        store.add(_jobs(16, LIMITED_TYPE, payload={"seconds": 0.05}))
    finally:
        store.close()
    env = guarded_env(
        SPOOL_STORE_URL=url,
        SPOOL_HANDLERS="tests.limit_handlers",
        **{LOG_DIR_ENV: str(log_dir)},
    )
    workers = [
        subprocess.Popen(
            [sys.executable, "-m", "local.cli", "worker", "--concurrency", "4"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        for _ in range(3)
    ]
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if most_at_once(str(log_dir))[1] >= 16 and _all_done(url):
                break
            for w in workers:
                assert w.poll() is None, w.stderr.read() if w.stderr else ""
            time.sleep(0.1)
    finally:
        for w in workers:
            stop(w)
    peak, attempts = most_at_once(str(log_dir))
    assert attempts == 16
    assert peak <= 2
    assert len(os.listdir(log_dir)) >= 1


def _running_pids(log_dir: Path) -> list[int]:
    """Processes with an attempt of the limited type that logged its start, not its end."""
    pids = []
    for log in log_dir.iterdir():
        lines = log.read_text().split()
        if lines.count("start") > lines.count("end"):
            pids.append(int(log.stem.removeprefix("attempts-")))
    return pids


@pytest.mark.timeout(120)
def test_a_slot_held_by_a_killed_worker_comes_back_when_its_lease_lapses(
    store_url: str, tmp_path: Path
) -> None:
    """SIGKILL a worker process while it runs the limited type: its slots stay taken
    (the limit still holds: never more than 2 at once, the killed attempts counted
    until the kill) and come back once the leases lapse, so every job still runs."""
    url = store_url
    log_dir = tmp_path / "attempts"
    log_dir.mkdir()
    store = open_store(url)
    try:
        store.add(_jobs(6, LIMITED_TYPE, payload={"seconds": 1.0}))
    finally:
        store.close()
    env = guarded_env(
        SPOOL_STORE_URL=url,
        SPOOL_HANDLERS="tests.limit_handlers",
        SPOOL_LEASE_SECONDS="3",
        **{LOG_DIR_ENV: str(log_dir)},
    )
    workers = {}
    for _ in range(3):
        w = subprocess.Popen(
            [sys.executable, "-m", "local.cli", "worker", "--concurrency", "4"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        workers[w.pid] = w
    killed: dict[int, float] = {}
    try:
        deadline = time.monotonic() + 90
        while not _all_done(url, 6):
            assert time.monotonic() < deadline, "the jobs never all ran: a slot leaked"
            if not killed:
                running = [pid for pid in _running_pids(log_dir) if pid in workers]
                if running:
                    workers[running[0]].kill()
                    killed[running[0]] = time.time()
                    workers[running[0]].wait(10)
            time.sleep(0.05)
    finally:
        for w in workers.values():
            stop(w)
    assert killed, "no worker was seen running a job"
    peak, attempts = most_at_once(str(log_dir), killed)
    assert peak <= 2
    assert attempts >= 7  # the killed worker's jobs ran again


def _all_done(url: str, jobs: int = 16) -> bool:
    store = open_store(url)
    try:
        return store.state_counts().get(("default", JobState.SUCCEEDED)) == jobs
    finally:
        store.close()


@pytest.fixture
def sqlite_store(tmp_path: Path) -> Iterator[Any]:
    store = open_store(f"sqlite:///{tmp_path}/spool.db")
    try:
        yield store
    finally:
        store.close()


def _fair_worker(store: Any, **weights: int) -> Worker:
    policy = ClaimPolicy(fair=True, weights=weights)
    return Worker(store, Registry(), WorkerConfig(policy=policy))


def _queue(worker: Worker, jobs: Iterable[Job]) -> None:
    worker._queue_fairly([_Attempt(j, None) for j in jobs])


def _fair_inbox(worker: Worker) -> list[tuple[str, str]]:
    return [(a.job.tenant, a.job.id) for a in worker._state.inbox]


def test_under_fair_turns_a_newcomer_is_queued_ahead_of_a_prefetched_backlog(
    sqlite_store: Any,
) -> None:
    added = [r.job for r in sqlite_store.add(_jobs(3, "echo", tenant="a") + _jobs(2, "echo", "b"))]
    worker = _fair_worker(sqlite_store)
    a0, a1, a2, b0, b1 = added
    _queue(worker, (a0, a1))
    _queue(worker, (a2, b0, b1))
    # b had nothing waiting here: it takes the first turn, then the tenants
    # alternate; each tenant's jobs keep their order.
    assert _fair_inbox(worker) == [
        ("b", b0.id),
        ("a", a0.id),
        ("b", b1.id),
        ("a", a1.id),
        ("a", a2.id),
    ]
    plain = Worker(sqlite_store, Registry(), WorkerConfig())
    assert not plain._fair


def test_under_fair_turns_one_claim_into_an_empty_inbox_alternates_tenants(
    sqlite_store: Any,
) -> None:
    """A claim returns jobs oldest first: a's backlog, then b's one new job. Taken
    into an empty inbox (neither tenant waiting here), b must not start last."""
    added = [r.job for r in sqlite_store.add(_jobs(4, "echo", tenant="a") + _jobs(1, "echo", "b"))]
    worker = _fair_worker(sqlite_store)
    _queue(worker, added)
    assert [t for t, _ in _fair_inbox(worker)] == ["a", "b", "a", "a", "a"]
    assert [i for _, i in _fair_inbox(worker)] == [
        added[0].id,
        added[4].id,
        added[1].id,
        added[2].id,
        added[3].id,
    ]


def test_under_fair_turns_the_inbox_follows_tenant_weights(sqlite_store: Any) -> None:
    added = [r.job for r in sqlite_store.add(_jobs(6, "echo", tenant="a") + _jobs(6, "echo", "b"))]
    worker = _fair_worker(sqlite_store, b=2)
    _queue(worker, added)
    # b weighs twice a: two of b's jobs for each of a's, a first on ties.
    assert [t for t, _ in _fair_inbox(worker)][:9] == [
        "a",
        "b",
        "b",
        "a",
        "b",
        "b",
        "a",
        "b",
        "b",
    ]


def test_under_fair_turns_announced_work_is_claimed_though_the_prefetch_is_full(
    sqlite_store: Any,
) -> None:
    """The prefetch room is used up by a's backlog; b's new job is announced. One
    dispatcher step claims it at once and queues it first, instead of waiting for
    half the room to free (which is what the step does without an announcement)."""
    sqlite_store.add(_jobs(20, "echo", tenant="a"))
    config = WorkerConfig(concurrency=2, batch_size=100, policy=ClaimPolicy(fair=True))
    worker = Worker(sqlite_store, Registry(), config)  # no pool threads: the inbox stays put
    first = worker._step(config.batch_size)
    assert first > 0
    assert worker._step(config.batch_size) == 0  # full: nothing more without news
    [b] = [r.job for r in sqlite_store.add(_jobs(1, "echo", tenant="b"))]
    worker._announced = True  # what the notifier bridge sets
    assert worker._step(config.batch_size) == config.concurrency
    assert _fair_inbox(worker)[0] == ("b", b.id)
    assert not worker._announced
    assert worker._step(config.batch_size) == 0


def test_holds_and_full_limits_are_shown_in_metrics(tmp_path: Path) -> None:
    """A real worker under a full limit: /metrics' exposition names the limit."""
    from chalicelib.api.metrics import Metrics

    registry = Registry()

    @registry.handler("gated", concurrency=1)
    def gated(payload: dict[str, Any]) -> None: ...

    store = open_store(f"sqlite:///{tmp_path}/spool.db")
    try:
        metrics = Metrics(store, Settings())
        policy = claim_policy(Settings(), registry.limits())
        worker = Worker(
            store, registry, WorkerConfig(concurrency=4, policy=policy), [metrics.middleware]
        )
        store.add(_jobs(3, "gated"))
        worker._claim(10)  # takes one: the limit is full
        text = metrics.exposition().decode()
        assert 'spool_limit_full{limit="type:gated"} 1.0' in text
        # The claim of the next due jobs skipped the full limit's two others unread:
        # it counts once (before, the counter stayed absent on SQLite and Postgres).
        assert 'spool_job_holds_total{kind="concurrency",limit="type:gated"} 1.0' in text
        held = [r.job.id for r in store.add(_jobs(2, "gated"))]
        assert worker.process(held) == {held[0]: "held", held[1]: "held"}
        text = metrics.exposition().decode()  # a claim by id names each job it held
        assert 'spool_job_holds_total{kind="concurrency",limit="type:gated"} 3.0' in text
        worker.drain()
        assert 'spool_limit_full{limit="type:gated"} 0.0' in metrics.exposition().decode()
    finally:
        store.close()


def test_a_fair_claim_on_postgres_refreshes_stale_planner_statistics() -> None:
    """A burst of enqueues between autovacuum rounds leaves the planner thinking the
    table nearly empty, and fair claims then sort a tenant's whole backlog: the first
    fair claim notices (from the kept counts) and analyzes."""
    from chalicelib.storage.postgres import from_url

    with fresh_schema() as url:
        store = from_url(url)
        try:
            store.add(_jobs(3000, "echo", tenant="a"))

            def estimate() -> float:
                def read(conn):
                    row = conn.execute(
                        "SELECT reltuples FROM pg_class WHERE oid = 'jobs'::regclass"
                    ).fetchone()
                    return float(row[0])

                return float(store._run(read))

            assert estimate() < 1500  # nothing has analyzed the burst yet
            assert len(store.claim(5, 30, policy=ClaimPolicy(fair=True))) == 5
            assert estimate() >= 1500
        finally:
            store.close()


def test_the_built_in_handlers_declare_no_limits() -> None:
    """Registry.limits reads loaded handlers only, so a worker's start-up does not import
    the deferred built-ins; that holds only while they declare no limits of their own."""
    import importlib

    from chalicelib.runtime import BUILTIN_HANDLERS

    registry_modules = set(BUILTIN_HANDLERS.values())
    for module in registry_modules:
        importlib.import_module(module)
    from chalicelib.handlers import registry

    # The built-ins' own specs: another test in this process may have left a handler of
    # its own, with a limit, in the shared registry.
    builtins = [spec for spec in registry.loaded_specs() if spec.type in BUILTIN_HANDLERS]
    assert {spec.type for spec in builtins} == set(BUILTIN_HANDLERS)
    assert [spec.type for spec in builtins if spec.limit is not None] == []


def test_a_limit_on_a_type_no_handler_registers_is_named_in_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A typo in SPOOL_LIMITS ("sned_email") left the real type unlimited, silently."""
    from chalicelib.runtime import build_runtime

    settings = Settings(
        store_url=f"sqlite:///{tmp_path}/spool.db",
        extra={"SPOOL_LIMITS": json.dumps({"type:sned_email": {"concurrency": 1}})},
    )
    rt = build_runtime(settings)
    try:
        with caplog.at_level(logging.WARNING, logger="spool.worker"):
            rt.worker()
        [warning] = [r.getMessage() for r in caplog.records if "SPOOL_LIMITS" in r.getMessage()]
        assert "'sned_email'" in warning and "send_email" in warning
    finally:
        rt.store.close()


def test_under_fair_turns_announced_work_starts_while_the_dispatcher_is_mid_step(
    store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The dispatcher is held inside a step (its write of a's completions does not
    return); b's job is announced meanwhile. The wake-up bridge claims it itself, so
    b's handler starts before that step ends, instead of after the whole step (the
    largest part of b's wait behind a's draining backlog on SQLite). On Postgres the
    write runs on the flusher thread, and the step waits for it all the same."""
    url = store_url
    store = open_store(url)
    in_finish, release, b_started = threading.Event(), threading.Event(), threading.Event()
    finish = store.finish

    def held_finish(completions: Any) -> Any:
        if completions and not release.is_set():
            in_finish.set()
            release.wait(30)
        return finish(completions)

    monkeypatch.setattr(store, "finish", held_finish)
    registry = Registry()

    @registry.handler("a_job")
    def a_job(payload: dict[str, Any]) -> None: ...

    @registry.handler("b_job")
    def b_job(payload: dict[str, Any]) -> None:
        b_started.set()

    store.add(_jobs(20, "a_job", tenant="a"))
    config = WorkerConfig(concurrency=2, policy=ClaimPolicy(fair=True))
    worker = Worker(store, registry, config)
    runner = threading.Thread(target=worker.run, daemon=True)
    runner.start()
    other = open_store(url)  # b's enqueue, as an API process's
    try:
        assert in_finish.wait(10), "the dispatcher never wrote a's completions"
        [added] = other.add(_jobs(1, "b_job", tenant="b"))
        started = b_started.wait(10)
        still_held = not release.is_set()
        release.set()
        assert started and still_held, "b's job waited for the dispatcher's step to end"
    finally:
        release.set()
        worker.stop()
        runner.join(30)
        other.close()
    assert not runner.is_alive()
    job = store.get(added.job.id)
    assert job is not None and job.state is JobState.SUCCEEDED
    # Stopped with a's backlog left queued; nothing claimed was left running.
    counts = store.state_counts()
    assert counts.get(("default", JobState.RUNNING), 0) == 0
    assert sum(counts.values()) == 21
    store.close()


def test_the_bridge_claims_nothing_once_the_worker_shuts_down(sqlite_store: Any) -> None:
    """A job the bridge claimed after shutdown began would sit in a closed pool's inbox
    until its lease lapsed (an attempt spent): once shutdown starts it leaves announced
    work to the dispatcher, which claims nothing more."""
    sqlite_store.add(_jobs(3, "echo", tenant="a"))
    worker = _fair_worker(sqlite_store)
    worker.stop()
    worker._shutdown()
    assert not worker._claim_announced()
    assert worker._state.inbox == deque()
    counts = sqlite_store.state_counts()
    assert counts.get(("default", JobState.QUEUED)) == 3


def test_under_a_rate_limit_the_bridge_leaves_announced_work_to_the_dispatcher(
    sqlite_store: Any,
) -> None:
    """A rate limit wants nothing claimed beyond the free threads, which only the
    dispatcher counts: the bridge does not claim, the dispatcher's quick claim does."""
    sqlite_store.add(_jobs(3, "echo", tenant="a"))
    policy = ClaimPolicy((Limit("type", "echo", rate=Rate.parse("5/s")),), fair=True)
    worker = Worker(sqlite_store, Registry(), WorkerConfig(policy=policy))
    assert not worker._claim_announced()
    assert not worker._state.inbox


def test_the_bridge_claims_at_most_concurrency_beyond_the_prefetch(sqlite_store: Any) -> None:
    """Every add is announced: under a stream of them the bridge would take a few jobs
    per announcement, held `running` out of other workers' reach. It stops at one
    worker's prefetch plus `concurrency`, and leaves the rest to the dispatcher."""
    sqlite_store.add(_jobs(100, "echo", tenant="a"))
    config = WorkerConfig(concurrency=2, batch_size=100, policy=ClaimPolicy(fair=True))
    worker = Worker(sqlite_store, Registry(), config)  # no pool threads: the inbox stays put
    most = config.concurrency * (worker._depth() + 1)
    while worker._claim_announced():
        assert len(worker._state.inbox) <= most
    assert len(worker._state.inbox) == most

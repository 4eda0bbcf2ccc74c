"""The `spool` command line on a real SQLite file: enqueue, worker, status, dlq."""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from chalicelib.clock import SystemClock
from chalicelib.models import JobQuery, JobState
from chalicelib.periodic import SYSTEM_TENANT, tick_of
from chalicelib.storage import open_store
from chalicelib.storage.sqlite import SQLiteStore
from local import cli
from tests.procs import guarded_env

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "spool.db"
    monkeypatch.setenv("SPOOL_STORE_URL", f"sqlite:///{path}")
    monkeypatch.delenv("SPOOL_SYNC_FINISH", raising=False)
    return path


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def state_of(db: Path, job_id: str) -> JobState:
    store = SQLiteStore(str(db), SystemClock())
    try:
        job = store.get(job_id)
        assert job is not None
        return job.state
    finally:
        store.close()


def start_worker(env: dict[str, str], concurrency: int) -> subprocess.Popen[str]:
    """A long-running `spool worker` process; its stderr carries the final tally."""
    return subprocess.Popen(
        [sys.executable, "-m", "local.cli", "worker", "--concurrency", str(concurrency)],
        cwd=REPO,
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_enqueue_work_and_status(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "enqueue", "echo", "--json", "--payload", '{"hello": "world"}')
    assert code == 0
    added = json.loads(out)
    assert added["created"] is True and added["state"] == "queued"
    code, _, err = run(capsys, "worker", "--burst", "--concurrency", "2")
    assert code == 0
    assert "1 succeeded" in err
    code, out, _ = run(capsys, "status", added["id"], "--json")
    shown = json.loads(out)
    assert (shown["state"], shown["result"]) == ("succeeded", {"hello": "world"})
    code, out, _ = run(capsys, "status", added["id"])  # for people: the result still JSON
    [result] = [line for line in out.splitlines() if line.startswith("result ")]
    assert json.loads(result.removeprefix("result")) == {"hello": "world"}


def test_enqueue_many_and_idempotency(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "enqueue", "echo", "--count", "1200")
    assert code == 0 and "enqueued 1200 jobs" in err
    first = json.loads(run(capsys, "enqueue", "echo", "--json", "--idempotency-key", "k")[1])
    again = json.loads(run(capsys, "enqueue", "echo", "--json", "--idempotency-key", "k")[1])
    assert first["id"] == again["id"] and again["created"] is False
    assert "1201 succeeded" in run(capsys, "worker", "--burst")[2]


@pytest.mark.parametrize(
    "argv, message",
    [
        (["enqueue", "echo", "--payload", "{not json"], "not valid JSON"),
        (["enqueue", "echo", "--priority", "5000"], "priority"),
        (["enqueue", "echo", "--payload", "[1, 2]"], "payload"),
    ],
)
def test_bad_enqueue_input_is_refused_with_exit_2(
    db: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    code, out, err = run(capsys, *argv)
    assert code == 2
    assert message in err
    assert out == ""
    assert not db.exists() or SQLiteStore(str(db)).counts() == {}


def test_unknown_type_and_bad_payload_are_errors(db: Path, capsys) -> None:
    code, _, err = run(capsys, "enqueue", "nope")
    assert code == 2 and "unknown job type 'nope'" in err and "SPOOL_HANDLERS" in err
    assert err.count("\n") == 1 and err.startswith("spool: ")
    # A user who forgot to export SPOOL_URL is told the command did not ask the server.
    assert "Without SPOOL_URL (or --url) this command uses the local store" in err
    code, _, err = run(capsys, "enqueue", "sleep", "--payload", '{"seconds": -1}')
    assert code == 2 and "sleep" in err and "seconds" in err
    store = SQLiteStore(str(db))
    assert store.counts() == {}
    store.close()


def test_status_of_unknown_job(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    open_store(f"sqlite:///{db}").close()
    code, _, err = run(capsys, "status", "j_" + "0" * 32)
    assert code == 1 and "not found" in err


@pytest.mark.parametrize(
    "argv",
    [
        ["status", "j_" + "0" * 32],
        ["jobs"],
        ["jobs", "--all", "--json"],
        ["top", "--once"],
        ["dlq", "list"],
        ["dlq", "redrive", "--all"],
        ["cancel", "j_" + "0" * 32],
        ["purge"],
    ],
)
def test_reading_a_store_that_does_not_exist_says_where_it_looked_and_creates_nothing(
    db: Path, capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    """`spool top` in the wrong folder used to create an empty store there and show
    "no jobs yet", read as the server having none. A usage error (exit 2):
    SPOOL_STORE_URL, or the folder, names no store."""
    code, out, err = run(capsys, *argv)
    assert code == 2 and out == ""
    assert err.startswith(f"spool: no Spool store at {db} (SPOOL_STORE_URL sqlite:///{db})")
    assert "Run the command in the folder `make run`" in err
    assert not db.exists() and list(db.parent.iterdir()) == []


@pytest.mark.parametrize("option", ["durability=nope", "synchronous=sometimes", "durabilty=full"])
def test_a_bad_option_on_a_missing_store_is_named_before_the_missing_file(
    db: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, option: str
) -> None:
    """The option is the mistake to fix: `spool jobs` said only that no store was
    there, and once one was, the option was refused."""
    monkeypatch.setenv("SPOOL_STORE_URL", f"sqlite:///{db}?{option}")
    code, out, err = run(capsys, "jobs")
    assert code == 2 and out == ""
    assert option.split("=")[0] in err and "no Spool store" not in err
    assert not db.exists()


def test_dead_letters_list_and_redrive(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ids = []
    for _ in range(3):
        _, out, _ = run(
            capsys, "enqueue", "fail", "--payload", '{"always": true}', "--max-attempts", "1",
            "--json",
        )  # fmt: skip
        ids.append(json.loads(out)["id"])
    assert "3 dead" in run(capsys, "worker", "--burst")[2]
    code, out, err = run(capsys, "dlq", "list")
    assert code == 0 and "3 dead job(s)" in err
    assert all(i in out for i in ids) and "planned failure" in out
    code, out, _ = run(capsys, "dlq", "redrive", ids[0], "--json")
    assert json.loads(out) == {"id": ids[0], "state": "queued"}
    assert state_of(db, ids[0]) is JobState.QUEUED
    code, _, err = run(capsys, "dlq", "redrive", "--all")
    assert code == 0 and "redriven 2 job(s)" in err
    assert {state_of(db, i) for i in ids} == {JobState.QUEUED}
    code, _, err = run(capsys, "dlq", "redrive")
    assert code == 2 and "--all" in err
    code, _, err = run(capsys, "dlq", "redrive", ids[0], "--type", "fail")
    assert code == 2 and "a job id names one job" in err


def test_sync_finish_from_flag_or_environment(db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from chalicelib.runtime import build_runtime

    parser = cli.build_parser()
    runtime = build_runtime()
    try:
        plain: argparse.Namespace = parser.parse_args(["worker"])
        flagged = parser.parse_args(["worker", "--sync-finish"])
        assert not cli._sync_finish(runtime, plain)
        assert cli._sync_finish(runtime, flagged)
    finally:
        runtime.close()
    monkeypatch.setenv("SPOOL_SYNC_FINISH", "true")
    runtime = build_runtime()
    try:
        assert cli._sync_finish(runtime, plain)
    finally:
        runtime.close()


SPOOL_ENQUEUE_SLEEP = [
    sys.executable, "-m", "local.cli", "enqueue", "sleep", "--payload", '{"seconds": 1.5}'
]  # fmt: skip


@pytest.mark.timeout(60)
def test_sigterm_finishes_the_running_job_then_exits(db: Path) -> None:
    env = guarded_env(PYTHONPATH=str(REPO))
    add = subprocess.run(
        [*SPOOL_ENQUEUE_SLEEP, "--json"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    job_id = json.loads(add.stdout)["id"]
    worker = start_worker(env, concurrency=1)
    try:
        deadline = time.monotonic() + 30
        while state_of(db, job_id) is not JobState.RUNNING:
            assert time.monotonic() < deadline, "the worker never started the job"
            assert worker.poll() is None
            time.sleep(0.02)
        worker.send_signal(signal.SIGTERM)
        _, err = worker.communicate(timeout=30)
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
    assert worker.returncode == 0
    assert "1 succeeded" in err
    assert state_of(db, job_id) is JobState.SUCCEEDED


@pytest.mark.timeout(60)
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_stops_a_burst_gracefully(db: Path, signum: signal.Signals) -> None:
    """SIGTERM or Ctrl-C during `spool worker --burst` finishes the job it runs and
    claims nothing more, as without --burst. The burst died at once: its job stayed
    `running` with the attempt spent until the lease lapsed, the rest untouched."""
    env = guarded_env(PYTHONPATH=str(REPO))
    ids = []
    for _ in range(3):
        add = subprocess.run(
            [*SPOOL_ENQUEUE_SLEEP, "--json"],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        ids.append(json.loads(add.stdout)["id"])
    worker = subprocess.Popen(
        [sys.executable, "-m", "local.cli", "worker", "--burst", "--concurrency", "1"],
        cwd=REPO,
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while JobState.RUNNING not in {state_of(db, j) for j in ids}:
            assert time.monotonic() < deadline, "the worker never started a job"
            assert worker.poll() is None
            time.sleep(0.02)
        worker.send_signal(signum)
        _, err = worker.communicate(timeout=30)
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
    assert worker.returncode == 0, err
    assert "1 succeeded" in err
    states = sorted(state_of(db, j).value for j in ids)
    assert states == ["queued", "queued", "succeeded"]
    store = open_store(f"sqlite:///{db}", SystemClock())
    try:
        assert store.live_workers(60) == []  # it signed off
    finally:
        store.close()


def test_burst_worker_fires_due_periodic_ticks(
    db: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SPOOL_SCHEDULES", '{"tick": {"type": "echo", "every": "1d"}}')
    code, _, err = run(capsys, "worker", "--burst")
    assert code == 0 and "1 succeeded" in err
    code, _, err = run(capsys, "worker", "--burst")
    assert code == 0 and "0 succeeded" in err  # today's tick already ran


def test_schedules_show_their_next_run(
    db: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(
        "SPOOL_SCHEDULES",
        '{"nightly": {"type": "echo", "cron": "0 2 * * *", "tz": "Europe/Paris"},'
        ' "off": {"type": "echo", "every": "1h", "enabled": false}}',
    )
    code, out, _ = run(capsys, "schedules")
    assert code == 0
    header, line = out.splitlines()  # a table for people; the disabled one is left out
    assert header.split() == ["name", "type", "when", "tz", "next_run"]
    assert line.startswith("nightly") and "0 2 * * *" in line and "Europe/Paris" in line
    code, out, _ = run(capsys, "schedules", "--json")
    assert code == 0
    [row] = json.loads(out)
    assert (row["name"], row["when"], row["tz"]) == ("nightly", "0 2 * * *", "Europe/Paris")
    next_run = datetime.fromisoformat(row["next_run"])
    assert next_run.astimezone(ZoneInfo("Europe/Paris")).hour == 2
    assert timedelta(0) < next_run - datetime.now(UTC) <= timedelta(days=1)


@pytest.mark.parametrize("spec", ['{"nightly": {"type": "echo", "every": "1h"}}', "", "{"])
def test_schedules_answer_from_the_settings_and_create_no_store(
    db: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, spec: str
) -> None:
    """`spool schedules` reads its answer from the settings (SPOOL_SCHEDULES, the
    handlers), not from stored jobs: it works before any job is stored, as a check of
    the settings, but it used to leave an empty store file behind where there was none."""
    monkeypatch.setenv("SPOOL_SCHEDULES", spec)
    code, out, err = run(capsys, "schedules")
    assert code == (2 if spec == "{" else 0), err
    assert ("nightly" in out) == spec.startswith('{"')
    assert not db.exists() and list(db.parent.iterdir()) == []
    if code == 0:  # its note with SPOOL_URL set names the store the settings name
        monkeypatch.setenv("SPOOL_URL", "http://127.0.0.1:9")
        code, _, err = run(capsys, "schedules")
        assert code == 0 and f"named by SPOOL_STORE_URL (sqlite:///{db})" in err
        assert "memory://" not in err and not db.exists()


def test_schedules_report_bad_settings(
    db: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SPOOL_SCHEDULES", '[{"name": "x", "type": "echo"}]')
    code, _, err = run(capsys, "schedules")
    assert code == 2 and err.startswith("spool: SPOOL_SCHEDULES[0] is invalid")
    assert err.count("\n") == 1


def test_a_running_worker_fires_each_tick_once(db: Path) -> None:
    """`spool worker` runs the scheduler beside its pool: a one-second schedule
    keeps yielding jobs that run, never two for one tick."""
    env = guarded_env(
        PYTHONPATH=str(REPO), SPOOL_SCHEDULES='{"tick": {"type": "echo", "every": 1}}'
    )
    worker = start_worker(env, concurrency=2)
    store = SQLiteStore(str(db), SystemClock())
    try:
        deadline = time.monotonic() + 30
        while True:
            done = store.list_jobs(JobQuery(tenant=SYSTEM_TENANT, state=JobState.SUCCEEDED)).jobs
            if len(done) >= 3:
                break
            assert time.monotonic() < deadline, f"only {len(done)} ticks ran"
            assert worker.poll() is None
            time.sleep(0.05)
        worker.send_signal(signal.SIGTERM)
        worker.communicate(timeout=30)
        jobs = store.list_jobs(JobQuery(tenant=SYSTEM_TENANT)).jobs
    finally:
        store.close()
        if worker.poll() is None:
            worker.kill()
            worker.wait()
    assert worker.returncode == 0
    ticks = [tick_of(j) for j in jobs]
    assert None not in ticks and len(ticks) >= 3
    assert len(set(ticks)) == len(ticks)  # one job per tick, never two


# -- tenants --------------------------------------------------------------------------
def test_tenant_option_on_every_command_that_reads_or_writes_jobs(
    db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    job = json.loads(run(capsys, "enqueue", "echo", "--json", "--tenant", "acme")[1])
    assert job["tenant"] == "acme"
    mine = run(capsys, "status", job["id"], "--tenant", "acme", "--json")[1]
    assert json.loads(mine)["tenant"] == "acme"
    operator = run(capsys, "status", job["id"], "--json")[1]  # no --tenant: every tenant
    assert json.loads(operator)["id"] == job["id"]
    code, _, err = run(capsys, "status", job["id"], "--tenant", "other")
    assert code == 1 and "not found" in err and "--tenant" in err

    dead = {}
    for tenant in ("acme", "other"):
        _, out, _ = run(
            capsys, "enqueue", "fail", "--payload", '{"always": true}', "--max-attempts", "1",
            "--tenant", tenant, "--json",
        )  # fmt: skip
        dead[tenant] = json.loads(out)["id"]
    run(capsys, "worker", "--burst")
    code, out, err = run(capsys, "dlq", "list", "--tenant", "acme")
    assert dead["acme"] in out and dead["other"] not in out and "1 dead job(s)" in err
    code, _, err = run(capsys, "dlq", "redrive", dead["acme"], "--tenant", "other")
    assert code == 1 and "not found" in err
    code, _, err = run(capsys, "dlq", "redrive", "--all", "--tenant", "acme")
    assert code == 0 and "redriven 1 job(s)" in err
    assert state_of(db, dead["acme"]) is JobState.QUEUED
    assert state_of(db, dead["other"]) is JobState.DEAD


# -- durations: one grammar -----------------------------------------------------------
def test_purge_takes_the_duration_grammar_schedules_use(
    db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    job_id = json.loads(run(capsys, "enqueue", "echo", "--json")[1])["id"]
    run(capsys, "worker", "--burst")
    for text in ("1h", "1h30m", "7d", "90"):
        code, _, err = run(capsys, "purge", "--older-than", text)
        assert (code, err) == (0, "purged 0 finished job(s)\n"), text
    assert state_of(db, job_id) is JobState.SUCCEEDED
    code, _, err = run(capsys, "purge", "--older-than", "0s")
    assert code == 0 and "purged 1 finished job(s)" in err


@pytest.mark.parametrize(
    "argv", [["purge", "--older-than", "soon"], ["enqueue", "echo", "--delay", "1x"]]
)
def test_a_bad_duration_is_one_usage_line(
    db: Path, capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    code, out, err = run(capsys, *argv)
    assert code == 2 and out == ""
    assert err.startswith("spool: ") and "is not a duration like" in err and "--help" in err
    assert err.count("\n") == 1


def test_enqueue_delay_takes_units(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    job_id = json.loads(run(capsys, "enqueue", "echo", "--json", "--delay", "15m")[1])["id"]
    shown = json.loads(run(capsys, "status", job_id, "--json")[1])
    wait = datetime.fromisoformat(shown["run_at"]) - datetime.fromisoformat(shown["created_at"])
    assert timedelta(minutes=14) < wait <= timedelta(minutes=15)


# -- progress bars count what the command works through ---------------------------------
class _Bar:
    made: list[_Bar] = []

    def __init__(self, total: int | None = None, **_: object) -> None:
        self.total, self.n = total, 0
        _Bar.made.append(self)

    def __enter__(self) -> _Bar:
        return self

    def __exit__(self, *_: object) -> None:
        pass

    def update(self, n: int) -> None:
        self.n += n

    def close(self) -> None:
        pass


def test_redrive_all_in_one_queue_counts_only_that_queue(
    db: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for queue, n in (("mail", 3), ("default", 5)):
        run(
            capsys, "enqueue", "fail", "--payload", '{"always": true}', "--max-attempts", "1",
            "--queue", queue, "--count", str(n),
        )  # fmt: skip
    run(capsys, "worker", "--burst")
    _Bar.made.clear()
    monkeypatch.setattr(cli, "_progress_bar", lambda: _Bar)
    code, _, err = run(capsys, "dlq", "redrive", "--all", "--queue", "mail")
    assert code == 0 and "redriven 3 job(s)" in err
    [bar] = _Bar.made
    assert (bar.n, bar.total) == (3, 3)  # was 3 of 8: every dead job in every queue


def test_burst_worker_bar_counts_only_its_queues(
    db: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    run(capsys, "enqueue", "echo", "--queue", "mail", "--count", "2")
    run(capsys, "enqueue", "echo", "--count", "4")
    monkeypatch.setenv("SPOOL_QUEUES", "mail")
    _Bar.made.clear()
    monkeypatch.setattr(cli, "_progress_bar", lambda: _Bar)
    code, _, err = run(capsys, "worker", "--burst")
    assert code == 0 and "2 succeeded" in err
    [bar] = _Bar.made
    assert (bar.n, bar.total) == (2, 2)


# -- schedules that could never enqueue ---------------------------------------------------
@pytest.mark.parametrize(
    ("spec", "named"),
    [
        ('{"nightly": {"type": "no.such.type", "every": "1d"}}', "unknown job type"),
        ('{"nightly": {"type": "sleep", "every": "1d", "payload": {"seconds": -1}}}', "seconds"),
    ],
)
def test_schedules_fail_on_a_schedule_that_cannot_enqueue(
    db: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    spec: str,
    named: str,
) -> None:
    monkeypatch.setenv("SPOOL_SCHEDULES", spec)
    code, out, err = run(capsys, "schedules")
    assert code == 2 and out == ""
    assert err.startswith("spool: schedule 'nightly' can never enqueue its job") and named in err
    assert "SPOOL_SCHEDULES" in err and err.count("\n") == 1


@pytest.mark.parametrize(
    ("spec", "said"),
    [
        ("{", "SPOOL_SCHEDULES is not valid JSON"),
        ('{"nightly": {"type": "no.such.type", "every": "1d"}}', "can never enqueue its job"),
    ],
)
@pytest.mark.parametrize(
    "argv", [["worker", "--burst"], ["serve", "--port", "0"]], ids=["worker", "serve"]
)
@pytest.mark.timeout(60)  # a serve that does not refuse would serve until stopped
def test_what_fires_schedules_refuses_to_start_on_a_bad_one(
    db: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    spec: str,
    said: str,
    argv: list[str],
) -> None:
    """They started anyway and logged an error at every tick: every periodic job
    stopped while the process looked healthy."""
    monkeypatch.setenv("SPOOL_SCHEDULES", spec)
    code, _, err = run(capsys, *argv)
    assert code == 2 and said in err and "SPOOL_SCHEDULES" in err, err


def test_worker_concurrency_is_held_to_the_setting_s_range(
    db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(capsys, "worker", "--burst", "--concurrency", "100000")
    assert code == 2 and "between 1 and 1024, not 100000" in err


@pytest.mark.parametrize(
    ("setting", "said"),
    [
        ({"SPOOL_SMTP_PORT": "abc"}, "SPOOL_SMTP_PORT must be a number"),
        ({"SPOOL_SMTP_SSL": "true", "SPOOL_SMTP_STARTTLS": "true"}, "not both"),
        ({"SPOOL_IMAGE_MAX_PIXELS": "abc"}, "SPOOL_IMAGE_MAX_PIXELS"),
        ({"SPOOL_HTTP_ALLOWLIST": "999.1.1.1/99"}, "not a valid CIDR"),
        # Each named: two host-name settings gave the same line, naming neither, and
        # a CA file that did not exist started the worker (every job that used it died).
        ({"SPOOL_HTTP_ALLOWLIST": "999.1.1.1/99"}, "SPOOL_HTTP_ALLOWLIST"),
        ({"SPOOL_SMTP_LOCAL_HOSTNAME": "bad host"}, "SPOOL_SMTP_LOCAL_HOSTNAME: 'bad host'"),
        ({"SPOOL_SMTP_MESSAGE_ID_DOMAIN": "bad host"}, "SPOOL_SMTP_MESSAGE_ID_DOMAIN: 'bad"),
        ({"SPOOL_SMTP_FROM": "not an address"}, "SPOOL_SMTP_FROM: "),
        ({"SPOOL_SMTP_CA_FILE": "/nonexistent/ca.pem"}, "SPOOL_SMTP_CA_FILE: '/nonexistent"),
        ({"SPOOL_HTTP_CA_FILE": "/nonexistent/ca.pem"}, "SPOOL_HTTP_CA_FILE: '/nonexistent"),
        ({"SPOOL_HTTP_PORTS": "443-80"}, "SPOOL_HTTP_PORTS: '443-80'"),
    ],
)
@pytest.mark.timeout(60)
def test_a_built_in_handler_s_bad_setting_stops_the_worker_before_any_job(
    db: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    setting: dict[str, str],
    said: str,
) -> None:
    """It started, and every send_email (or http_request, resize_image) job went dead
    with "misconfigured" while the worker looked healthy."""
    for name, value in setting.items():
        monkeypatch.setenv(name, value)
    for argv in (["worker", "--burst"], ["serve", "--port", "0"]):
        code, _, err = run(capsys, *argv)
        assert code == 2 and said in err and "Fix the variable" in err, (argv, err)


def test_a_built_in_handler_s_good_settings_start_the_worker(
    db: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SPOOL_SMTP_HOST", "127.0.0.1")
    monkeypatch.setenv("SPOOL_SMTP_PORT", "2525")
    monkeypatch.setenv("SPOOL_HTTP_ALLOWLIST", "api.example.com")
    code, _, err = run(capsys, "worker", "--burst")
    assert code == 0, err


def test_a_handler_that_took_a_built_in_s_name_is_not_held_to_its_settings(
    db: Path, tmp_path: Path
) -> None:
    """SPOOL_SMTP_* belong to the built-in send_email; a SPOOL_HANDLERS module's own
    send_email may read them its own way (or not at all)."""
    (tmp_path / "own_mail.py").write_text(
        "from chalicelib.handlers import handler\n\n"
        "@handler('send_email')\n"
        "def send_email(payload, ctx):\n"
        "    return {'sent': 'my way'}\n"
    )
    env = guarded_env(
        PYTHONPATH=str(REPO), SPOOL_HANDLERS="own_mail", SPOOL_SMTP_PORT="not-a-port",
        SPOOL_STORE_URL=f"sqlite:///{db}",
    )  # fmt: skip
    done = subprocess.run(
        [sys.executable, "-m", "local.cli", "worker", "--burst"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr


# -- counts and limits are checked where they are typed ------------------------------------
@pytest.mark.parametrize(
    "argv",
    [
        ["enqueue", "echo", "--count", "0"],
        ["enqueue", "echo", "--count", "-5"],
        ["worker", "--concurrency", "0"],
        ["dlq", "list", "--limit", "0"],
    ],
)
def test_counts_below_one_are_usage_errors(
    db: Path, capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    code, out, err = run(capsys, *argv)
    assert code == 2 and out == "" and err.startswith("spool: ") and "at least 1" in err
    assert not db.exists() or SQLiteStore(str(db)).counts() == {}


def _options(parser: argparse.ArgumentParser, path: str = "spool") -> list[tuple[str, Any]]:
    found = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found += _options(sub, f"{path} {name}")
        elif action.option_strings and action.help is not argparse.SUPPRESS:
            found.append((f"{path} {action.option_strings[0]}", action))
    return found


def test_every_option_with_a_default_names_it_in_its_help() -> None:
    """`spool serve --help` said nothing of port 8000 or 16 threads, nor `spool top --help`
    of redrawing every 2 s: whoever read --help had to guess what the command would do."""
    unnamed = [
        name
        for name, action in _options(cli.build_parser())
        if action.default not in (None, False, argparse.SUPPRESS)
        and "default" not in (action.help or "")
    ]
    assert unnamed == []


def test_serve_help_names_the_server_s_default_threads() -> None:
    from local.server import DEFAULT_THREADS

    threads = dict(_options(cli.build_parser()))["spool serve --threads"]
    assert f"default {DEFAULT_THREADS})" in threads.help

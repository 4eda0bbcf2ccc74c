"""A SPOOL_* variable far from every setting's name was read by nothing, without a word.

A new user who wrote SPOOL_HANDLER_MODULES=myapp.jobs (meant: SPOOL_HANDLERS) saw
`spool worker` and `spool serve` start with the built-in types only: the near-miss
refusal (settings_catalog.misspelt) leaves such names alone, since other programs and
handlers may own SPOOL_* names. They still start, and now say at start-up which
SPOOL_* variables Spool does not read, with the setting meant when the name shares a
distinctive word with one (HANDLER ~ HANDLERS).
"""

from __future__ import annotations

import json
import select
import subprocess
import sys
from pathlib import Path

import pytest

from chalicelib import settings_catalog as catalog
from tests.procs import ROOT, guarded_env, spool_serve_logged, stop
from tests.test_chalice_local import free_port, start_chalice_local

HANDLERS = (
    "from chalicelib.handlers import handler\n\n\n"
    "@handler('send_report', concurrency=2, rate='100/h')\n"
    "def send_report(payload: dict) -> dict:\n"
    "    return {'ok': True}\n"
)
MEANT = (
    "spool: warning: SPOOL_HANDLER_MODULES (did you mean SPOOL_HANDLERS?) is not a Spool "
    "setting, so nothing in Spool reads it"
)


def _project(tmp_path: Path) -> Path:
    """A scratch project with a handler module, as docs/handlers.md has one write."""
    (tmp_path / "myapp").mkdir(exist_ok=True)
    (tmp_path / "myapp" / "__init__.py").write_text("")
    (tmp_path / "myapp" / "jobs.py").write_text(HANDLERS)
    return tmp_path


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = guarded_env(PYTHONPATH=str(ROOT), **extra)
    env["SPOOL_STORE_URL"] = f"sqlite:///{tmp_path / 'spool.db'}"
    return env


def _worker(tmp_path: Path, **extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "local.cli", "worker", "--burst"],
        cwd=_project(tmp_path), env=_env(tmp_path, **extra), capture_output=True, text=True,
        timeout=60,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("name", "meant"),
    [
        ("SPOOL_HANDLER_MODULES", "SPOOL_HANDLERS"),  # HANDLER ~ HANDLERS
        ("SPOOL_HANDLERS_PATH", "SPOOL_HANDLERS"),
        ("SPOOL_WORKER_CONCURRENCY", "SPOOL_CONCURRENCY"),
        ("SPOOL_LEASE_TIME", "SPOOL_LEASE_SECONDS"),
        ("spool_handler_modules", "SPOOL_HANDLERS"),  # the case does not matter
        ("SPOOL_MODULES", ""),  # no word in common: unread all the same
        ("SPOOL_PARTNER_API_KEY", ""),  # API and KEY name many settings: no hint
    ],
)
def test_a_name_no_setting_has_is_unread_with_the_setting_it_shares_a_word_with(
    name: str, meant: str
) -> None:
    assert catalog.unread({name: "x"}) == [(name, meant)]


def test_settings_near_misses_and_the_suite_s_own_names_are_not_unread() -> None:
    """Settings are read; a near miss is refused (misspelt), not warned about; the
    suite's and the benchmarks' variables (docs/testing.md) are theirs; a name listed in
    SPOOL_SECRET_VARIABLES is a handler's own, declared as such."""
    environ = {
        "SPOOL_HANDLERS": "myapp.jobs",
        "SPOOL_CONCURENCY": "4",
        "SPOOL_TEST_PG_URL": "postgresql://x",
        "SPOOL_TEST_NETGUARD": "1",
        "SPOOL_REQUIRE_POSTGRES": "1",
        "SPOOL_BENCH_REDIS_URL": "redis://x",
        "SPOOL_HYPOTHESIS_PROFILE": "ci",
        "SPOOL_SECRET_VARIABLES": "SPOOL_PARTNER_TOKEN, BILLING_KEY",
        "SPOOL_PARTNER_TOKEN": "secret",
        "HOME": "/root",
    }
    assert catalog.unread(environ) == []


def test_spool_worker_names_a_handlers_setting_written_otherwise_and_still_runs(
    tmp_path: Path,
) -> None:
    """Before: `spool worker` started without a word, on the built-in types only, and
    every send_report job it claimed went dead ("no handler for 'send_report' in this
    worker")."""
    done = _worker(tmp_path, SPOOL_HANDLER_MODULES="myapp.jobs")
    assert done.returncode == 0, done.stderr
    [warning] = [line for line in done.stderr.splitlines() if "warning" in line]
    assert warning.startswith(MEANT), warning
    assert "drop the SPOOL_ prefix" in warning  # what to do when it is a handler's own
    assert "docs/settings.md" in warning


def test_spool_worker_says_nothing_more_when_every_spool_name_is_read(tmp_path: Path) -> None:
    done = _worker(tmp_path, SPOOL_HANDLERS="myapp.jobs", SPOOL_TEST_PG_URL="postgresql://x")
    assert done.returncode == 0, done.stderr
    assert "warning" not in done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith("done: 0 succeeded")


def test_one_shot_commands_stay_quiet_about_handlers_own_names(tmp_path: Path) -> None:
    """`spool enqueue` and the like run from scripts, often: the notice is for the
    start of a process that loads handlers, where an operator reads its lines."""
    done = subprocess.run(
        [sys.executable, "-m", "local.cli", "enqueue", "send_report"],
        cwd=_project(tmp_path),
        env=_env(tmp_path, SPOOL_HANDLERS="myapp.jobs", SPOOL_PARTNER_TOKEN="t"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    # Only the note that no worker runs the job yet (stop 59), not the settings notice.
    assert "SPOOL_PARTNER_TOKEN" not in done.stderr
    assert [line.split(": no worker")[0] for line in done.stderr.splitlines()] == ["spool: note"]


def test_spool_serve_names_it_before_its_banner(tmp_path: Path) -> None:
    log = tmp_path / "serve.log"
    env = _env(tmp_path, SPOOL_HANDLER_MODULES="myapp.jobs")
    served = spool_serve_logged(log, "--no-worker", env=env)
    try:
        assert "send_report" not in served.banner  # the handlers really are not loaded
        assert MEANT in log.read_text()
    finally:
        stop(served.proc)


def test_the_sqs_poller_names_it_too(tmp_path: Path) -> None:
    env = _env(tmp_path, SPOOL_HANDLER_MODULES="myapp.jobs")
    done = subprocess.run(
        [sys.executable, "-m", "local.sqs_poller", "--max-seconds", "1"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert MEANT in done.stderr


def test_chalice_local_names_it_and_serves(tmp_path: Path) -> None:
    env = _env(tmp_path, SPOOL_API_KEYS="local-key-0123456789=local", SPOOL_HANDLER_MODULES="x")
    env.pop("SPOOL_STORE_URL")
    proc = start_chalice_local(tmp_path, free_port(), env)
    try:
        assert proc.stderr is not None
        # chalice local prints nothing more to stderr until a request: bound the wait.
        ready, _, _ = select.select([proc.stderr], [], [], 60)
        first = proc.stderr.readline().decode() if ready else "(nothing within 60 s)"
        assert first.startswith(MEANT), first
        assert proc.poll() is None  # a notice, not a refusal
    finally:
        stop(proc, 10)


def _package_check(
    tmp_path: Path, env: dict[str, str], api_env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """`make package`'s first step on a stage whose environment is `env`, and
    api_handler's own `api_env`."""
    config = {
        "stages": {
            "prod": {
                "environment_variables": env,
                "lambda_functions": {
                    "api_handler": {"environment_variables": api_env or {}},
                    "run_jobs": {"lambda_timeout": 300},
                },
            }
        }
    }
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    check = ["-m", "chalicelib.handler_check", "--stage", "prod", "--config", str(path)]
    return subprocess.run(
        [sys.executable, *check],
        cwd=_project(tmp_path), env=guarded_env(PYTHONPATH=f"{tmp_path}:{ROOT}"),
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def test_make_package_refuses_a_misspelt_setting_in_the_stage(tmp_path: Path) -> None:
    """Lambda never checks names (a cold start does not pay for it), so SPOOL_STORE_UR in
    .chalice/config.json was packaged and deployed: every function ran on the default
    store. The package step, which reads that file, refuses it as `spool` does."""
    done = _package_check(tmp_path, {"SPOOL_STORE_UR": "dynamodb://t?queue=q"})
    assert done.returncode == 1, done.stderr
    assert done.stderr.startswith(
        "handler_check (prod): SPOOL_STORE_UR (did you mean SPOOL_STORE_URL?) is not a Spool "
        "setting, so nothing reads it. Rename or unset it; docs/settings.md lists every setting"
    ), done.stderr


def test_make_package_names_an_unread_variable_in_the_stage_and_goes_on(tmp_path: Path) -> None:
    """SPOOL_HANDLER_MODULES in the stage deployed functions without the handlers: every
    job of theirs refused at enqueue (422 unknown_job_type), silently at package time."""
    done = _package_check(tmp_path, {"SPOOL_HANDLER_MODULES": "myapp.jobs"})
    assert done.returncode == 0, done.stderr
    assert done.stderr.startswith(MEANT), done.stderr


def test_make_package_checks_a_function_s_own_variables_too(tmp_path: Path) -> None:
    done = _package_check(tmp_path, {"SPOOL_HANDLERS": "myapp.jobs"}, {"SPOOL_CACHE_TTI": "9"})
    assert done.returncode == 1 and "SPOOL_CACHE_TTI (did you mean" in done.stderr
    done = _package_check(tmp_path, {"SPOOL_HANDLERS": "myapp.jobs"}, {"SPOOL_CACHE_TTL": "9"})
    assert (done.returncode, done.stderr) == (0, "")


def test_spool_serve_processes_names_it_once_not_once_per_server_process(
    tmp_path: Path,
) -> None:
    """The supervisor warned, then each server process (`spool serve --no-worker`
    started by it) again, and again at each restart: three lines for --processes 2."""
    log = tmp_path / "serve.log"
    env = _env(tmp_path, SPOOL_HANDLER_MODULES="myapp.jobs")
    served = spool_serve_logged(log, "--no-worker", "--processes", "2", env=env)
    try:
        # Both server processes answer before the banner, so they have spoken by now.
        assert log.read_text().count(MEANT) == 1, log.read_text()
    finally:
        stop(served.proc)

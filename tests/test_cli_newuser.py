"""A new user's black-box pass over `spool`, each finding as the behaviour it now has.

Settings a command cannot work with are refused at start (exit 2, one line naming
the setting and its range), before a job is touched or a banner printed; Ctrl-C
finishes running work and a second one stops at once (exit 130, as `spool --help`
says); commands that cannot follow SPOOL_URL say so; the help tells every exit code.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import requests

from chalicelib.clock import SystemClock
from chalicelib.models import JobState
from chalicelib.storage import open_store
from chalicelib.storage.sqlite import SQLiteStore
from local import cli, remote_cli, serve
from tests.procs import ROOT, guarded_env, spool_serve, stop
from tests.test_cli import state_of

FAIL_ONCE = ["--payload", '{"always": true}', "--max-attempts", "1"]


@pytest.fixture
def db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "spool.db"
    monkeypatch.setenv("SPOOL_STORE_URL", f"sqlite:///{path}")
    for name in ("SPOOL_URL", "SPOOL_API_KEY", "SPOOL_SYNC_FINISH", "SPOOL_DEBUG"):
        monkeypatch.delenv(name, raising=False)
    return path


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def enqueue(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    code, out, _ = run(capsys, "enqueue", *argv, "--json")
    assert code == 0
    return str(json.loads(out)["id"])


# -- 1, 2, 4: settings the worker cannot work with ------------------------------------------


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("SPOOL_LEASE_SECONDS", "0", "SPOOL_LEASE_SECONDS must be between 2 and 86400 seconds"),
        ("SPOOL_LEASE_SECONDS", "-3", "SPOOL_LEASE_SECONDS must be between 2 and 86400 seconds"),
        ("SPOOL_CONCURRENCY", "0", "SPOOL_CONCURRENCY must be between 1 and 1024 threads"),
        ("SPOOL_DEMO_HANDLERS", "ture", "SPOOL_DEMO_HANDLERS must be true or false"),
        ("SPOOL_SYNC_FINISH", "ture", "SPOOL_SYNC_FINISH must be true or false"),
        ("SPOOL_DEBUG", "ture", "SPOOL_DEBUG must be true or false"),
        # Checked after every due job had run, before: the command still exited 2.
        ("SPOOL_WEBHOOKS", '{"acme": {"url": "https://example.test/hook"}}', "SPOOL_WEBHOOKS"),
        # A misspelt name, read by nothing: before, the worker ran on 8 threads, exit 0.
        ("SPOOL_CONCURENCY", "32", "SPOOL_CONCURENCY (did you mean SPOOL_CONCURRENCY?) is not"),
        ("spool_lease_seconds", "30", "spool_lease_seconds (did you mean SPOOL_LEASE_SECONDS?)"),
        # A name cut short, read by nothing: before, left alone however far from the meant.
        ("SPOOL_DEMO", "false", "SPOOL_DEMO (did you mean SPOOL_DEMO_HANDLERS?) is not"),
        ("SPOOL_STORE", "memory://", "SPOOL_STORE (did you mean SPOOL_STORE_URL?) is not"),
    ],
)
def test_a_burst_worker_refuses_what_it_cannot_work_with(
    db: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    variable: str,
    value: str,
    message: str,
) -> None:
    job_id = enqueue(capsys, "echo")
    monkeypatch.setenv(variable, value)
    code, out, err = run(capsys, "worker", "--burst")
    assert code == 2 and out == ""
    assert err.startswith(f"spool: {message}") and err.count("\n") == 1, err
    assert "unexpected error" not in err
    # Before: a lease of 0 buried the job after 3 "lease expired" attempts, unrun.
    assert state_of(db, job_id) is JobState.QUEUED


def test_a_misspelt_store_url_stores_nothing_anywhere(
    db: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """SPOOL_STORE_UR (and SPOOL_UR for SPOOL_URL) used to be read by nothing: the job
    went into the default store, not the one named, and the command said `created`."""
    meant = tmp_path / "meant.db"
    monkeypatch.setenv("SPOOL_STORE_UR", f"sqlite:///{meant}")
    monkeypatch.setenv("SPOOL_UR", "http://127.0.0.1:9")
    code, out, err = run(capsys, "enqueue", "echo")
    assert code == 2 and out == ""
    assert err == (
        "spool: SPOOL_STORE_UR (did you mean SPOOL_STORE_URL?), SPOOL_UR (did you mean "
        "SPOOL_URL?) are not Spool settings, so nothing reads them. Rename or unset them; "
        "docs/settings.md lists every setting.\n"
    )
    assert not db.exists() and not meant.exists()


def test_spool_serve_refuses_a_setting_s_name_cut_short(tmp_path: Path) -> None:
    """`spool serve` with SPOOL_STORE (meant: SPOOL_STORE_URL) served the default
    SQLite file under the working directory; now it stops before serving, in one line."""
    env = {**guarded_env(), "SPOOL_STORE": f"sqlite:///{tmp_path / 'meant.db'}"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [env.get("PYTHONPATH"), str(ROOT)]))
    done = subprocess.run(
        [sys.executable, "-m", "local.cli", "serve", "--port", "0"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.startswith(
        "spool: SPOOL_STORE (did you mean SPOOL_STORE_URL?) is not a Spool setting"
    ), done.stderr
    assert not (tmp_path / ".spool").exists() and not (tmp_path / "meant.db").exists()


@pytest.mark.parametrize("spaced", ["{url} ", " {url}\t", "{url}\n"])
def test_a_store_url_with_spaces_around_it_names_the_same_store(
    db: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, spaced: str
) -> None:
    """Before: "sqlite:///x.db " (a trailing space, as .env files and copy-paste leave)
    made a second store, "x.db " with its space, where `spool worker` ran and no
    command without the space looked; blank meant no scheme, not the default."""
    monkeypatch.setenv("SPOOL_STORE_URL", spaced.format(url=f"sqlite:///{db}"))
    job_id = enqueue(capsys, "echo")
    assert [p.name for p in db.parent.iterdir() if p.name.startswith(db.name + " ")] == []
    assert state_of(db, job_id) is JobState.QUEUED


def test_a_blank_store_url_is_the_default_as_an_empty_one_is(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SPOOL_STORE_URL", "  ")
    enqueue(capsys, "echo")
    assert (tmp_path / ".spool" / "spool.db").exists()


def test_names_far_from_every_setting_are_left_alone(
    db: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Other programs' and handlers' own SPOOL_* names (the nearest in this repository
    are four edits from a setting, and begin none) are not taken for misspellings.
    SPOOL_HTTP_ALLOW was one of them: it is SPOOL_HTTP_ALLOWLIST cut short, refused now."""
    for name in ("SPOOL_TEST_REDIS_URL", "SPOOL_HTTPS_PROXY", "SPOOL_PARTNER_API_KEY", "SPOOL_X"):
        monkeypatch.setenv(name, "1")
    job_id = enqueue(capsys, "echo")
    assert state_of(db, job_id) is JobState.QUEUED


@pytest.mark.parametrize("argv", [["jobs"], ["dlq", "list"]])
def test_a_cursor_that_is_no_pages_is_a_usage_error_as_it_is_remotely(
    db: Path, capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    """Exit 1 ("failed at run time") here, 2 against a server (its 400): the same typo,
    two exit codes. Now 2 both ways, as `spool --help` says of wrong options."""
    enqueue(capsys, "echo")
    code, out, err = run(capsys, *argv, "--cursor", "garbage")
    assert (code, out) == (2, "")
    assert err == (
        "spool: invalid cursor: give back a next_cursor from the page before, as it was sent.\n"
    )


def test_the_burst_summary_counts_jobs_the_store_buried(
    db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A job whose last attempt's lease lapsed (a worker that died) is buried by the
    next claim, not by an attempt of this worker: the summary counts it all the same."""
    job_id = enqueue(capsys, "echo", "--max-attempts", "1")
    store = SQLiteStore(str(db), SystemClock())
    try:
        [claimed] = store.claim(1, 0.01, None)  # a worker claims it, then dies
        assert claimed.id == job_id
    finally:
        store.close()
    time.sleep(0.05)
    code, _, err = run(capsys, "worker", "--burst")
    assert code == 0 and "0 succeeded, 0 retried, 1 dead" in err
    assert state_of(db, job_id) is JobState.DEAD


def test_a_burst_that_leaves_jobs_a_limit_held_says_so(
    db: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`--burst` ends when only held jobs are left (docs/handlers.md). Its summary said
    "done: 2 succeeded, 0 retried, 0 dead" and nothing of the 3 due jobs it left
    queued, so a new user with `rate="2/h"` read it as a worker that lost jobs."""
    monkeypatch.setenv("SPOOL_LIMITS", '{"type:echo": {"rate": "2/h"}}')
    ids = [enqueue(capsys, "echo") for _ in range(5)]
    code, _, err = run(capsys, "worker", "--burst")
    assert code == 0 and "done: 2 succeeded, 0 retried, 0 dead" in err
    assert sorted(state_of(db, i).value for i in ids).count("queued") == 3
    assert (
        "spool: due jobs are left queued: a concurrency or rate limit held them back "
        "(the handler's @handler(concurrency=, rate=) or SPOOL_LIMITS). "
        "Run the worker again once the limit has room, or without --burst to wait for it."
    ) in err.splitlines()
    monkeypatch.delenv("SPOOL_LIMITS")
    code, _, err = run(capsys, "worker", "--burst")
    assert code == 0 and "done: 3 succeeded" in err and "held them back" not in err


@pytest.mark.parametrize("remote", [False, True])
def test_a_payload_of_a_dash_reads_standard_input(
    db: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, remote: bool
) -> None:
    """`echo '{...}' | spool enqueue echo --payload -` (stdin, as `-` is for many
    commands) was told to quote its JSON for the shell, which it had not given; then
    to pass "$(cat)", which cannot carry more than one argument holds (128 KiB). It
    reads standard input now (tests/test_newuser_s61C_payload_file.py); JSON that is
    not valid there is named as standard input's."""
    if remote:  # refused before any request: nothing listens on port 9
        monkeypatch.setenv("SPOOL_URL", "http://127.0.0.1:9")
        monkeypatch.setenv("SPOOL_API_KEY", "dev-key-of-sixteen-chars")
    monkeypatch.setattr(sys, "stdin", SimpleNamespace(buffer=io.BytesIO(b"{'a': 1}")))
    code, out, err = run(capsys, "enqueue", "echo", "--payload", "-")
    assert (code, out) == (2, "")
    assert err.endswith("Fix the JSON in standard input.\n"), err
    assert not db.exists()


@pytest.mark.parametrize(
    ("argv", "helped"),
    [
        (["jobs", "--bogus"], "spool jobs"),
        (["enqueue", "echo", "--run-at", "5"], "spool enqueue"),
        (["dlq", "list", "--state", "dead"], "spool dlq list"),
        (["top", "--once", "--url", "http://127.0.0.1:9"], "spool top"),
    ],
)
def test_an_option_a_command_lacks_points_at_that_command_s_help(
    db: Path, capsys: pytest.CaptureFixture[str], argv: list[str], helped: str
) -> None:
    """Every other usage error names the command's own help; an unknown option named
    `spool --help`, which lists no command's options, so the fix was one more lookup."""
    code, out, err = run(capsys, *argv)
    assert (code, out) == (2, "")
    extra = " ".join(argv[argv.index(next(a for a in argv if a.startswith("--"))) :])
    if argv[0] == "top":  # and where --url works (tests/test_cli_option_places.py)
        extra = "--url http://127.0.0.1:9: --url works with the job commands only "
        extra += "(enqueue, status, jobs, cancel, dlq)"
    assert err == f"spool: unrecognized arguments: {extra}. See `{helped} --help`.\n"
    assert not db.exists()


@pytest.mark.parametrize(
    ("entry", "said"),
    [
        (
            '{"name": "tick", "type": "echo", "every": "15x"}',
            "every: '15x' is not a duration like 90, '90s', '15m', '2h', '1d', '1w' or '1h30m'",
        ),
        (
            '{"name": "tick", "type": "echo", "every": "15m", "evry": 1}',
            "evry: not a schedule field (name, type, cron, every, tz, payload, queue, "
            "priority, max_attempts, catch_up, start, enabled)",
        ),
        ('{"type": "echo", "every": "15m"}', "name: missing"),
    ],
)
def test_a_malformed_schedule_is_one_worded_line(
    db: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    entry: str,
    said: str,
) -> None:
    """`spool schedules` put pydantic's whole report on the line: "1 validation error
    for ScheduleSpec every Value error, ... [type=value_error, input_value='15x',
    input_type=str] For further information visit https://errors.pydantic.dev/...".
    Now the field and what is wrong with it, as a payload's refusal says them."""
    monkeypatch.setenv("SPOOL_SCHEDULES", f"[{entry}]")
    code, out, err = run(capsys, "schedules")
    assert (code, out) == (2, "")
    assert err == (
        f"spool: SPOOL_SCHEDULES[0] is invalid: {said}. "
        "Fix SPOOL_SCHEDULES (JSON: a list, or an object by name).\n"
    )


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (
            ["enqeue", "echo"],
            "spool: 'enqeue' is not a command of `spool`: did you mean 'enqueue'? "
            "See `spool --help`.",
        ),
        (
            ["jobs", "--state", "suceeded"],
            "spool: argument --state: invalid choice: 'suceeded' (choose from 'queued', "
            "'running', 'retrying', 'succeeded', 'dead', 'cancelled'): did you mean "
            "'succeeded'? See `spool jobs --help`.",
        ),
        (
            ["enqueue", "echo", "--paylod", "{}"],
            "spool: unrecognized arguments: --paylod {}: did you mean --payload? "
            "See `spool enqueue --help`.",
        ),
        (
            ["worker", "--concurency", "2"],
            "spool: unrecognized arguments: --concurency 2: did you mean --concurrency? "
            "See `spool worker --help`.",
        ),
    ],
)
def test_a_misspelt_command_choice_or_option_is_told_the_one_meant(
    db: Path, capsys: pytest.CaptureFixture[str], argv: list[str], said: str
) -> None:
    """A letter off: `spool enqeue` was shown all eleven commands to pick from, and
    `--paylod` only that it was not known, where a misspelt setting's name is told
    the one meant (SPOOL_CONCURENCY: did you mean SPOOL_CONCURRENCY?)."""
    code, out, err = run(capsys, *argv)
    assert (code, out) == (2, "")
    assert err == said + "\n"


def test_a_metrics_host_not_of_this_machine_is_told_to_fix_the_host(
    db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """192.0.2.1 (TEST-NET: bound, never sent to) is no address of this machine. The
    worker said to pick another --metrics-port, a port that was free all along;
    `spool serve --host` already says to fix the address (serve.listen_failure)."""
    code, out, err = run(
        capsys, "worker", "--burst", "--metrics-port", "0", "--metrics-host", "192.0.2.1"
    )
    assert (code, out) == (2, "")
    assert err == (
        "spool: cannot serve metrics on 192.0.2.1:0: Cannot assign requested address. "
        "--metrics-host must be an address of this machine: 127.0.0.1 (this machine only), "
        "0.0.0.0 (every interface) or one of its interfaces' addresses.\n"
    )


def test_spool_db_names_its_url_option_when_the_url_came_from_it(
    db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`spool db --url URL` blamed SPOOL_STORE_URL, a variable this user never set."""
    code, _, err = run(capsys, "db", "--url", "mysql://127.0.0.1/x", "status")
    assert code == 2
    assert err.startswith("spool: --url 'mysql://127.0.0.1/x': unknown store URL scheme 'mysql'")
    code, _, err = run(capsys, "db", "--url", f"sqlite:///{db}", "migrate")
    assert code == 0
    assert (
        err == "nothing to migrate: only Postgres stores have migrations (--url is sqlite://...)\n"
    )
    code, _, err = run(capsys, "db", "migrate")  # from the variable, as before
    assert err.endswith("(SPOOL_STORE_URL is sqlite://...)\n")


@pytest.mark.parametrize(
    "argv",
    [
        ["jobs", "--type", ""],
        ["jobs", "--queue", "bad queue"],
        ["dlq", "list", "--queue", ""],
        ["dlq", "redrive", "--all", "--type", ""],
    ],
)
def test_an_empty_or_impossible_filter_is_refused_locally_as_remotely(
    db: Path, capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    """`--type "$TYPE"` with TYPE unset: a server refuses the empty filter (exit 2,
    "query parameter 'type' is empty"); the local store listed "0 job(s)" and
    redrove nothing, exit 0, as if there were no such jobs."""
    open_store(f"sqlite:///{db}").close()
    code, out, err = run(capsys, *argv)
    assert (code, out) == (2, "")
    option = next(a for a in argv if a in ("--type", "--queue"))
    kind = option.removeprefix("--")
    assert err.startswith(
        f"spool: argument {option}: a {kind} is 1 to 64 letters, digits, '_', '.', ':' or '-', not "
    ), err


@pytest.mark.parametrize("remote", [False, True])
@pytest.mark.parametrize(
    "payload", ['{"a": 1e999}', '{"a": NaN}', '{"a": 1e-400}', '{"a": 1, "a": 2}']
)
def test_a_payload_refused_for_its_values_is_not_told_to_quote_it(
    db: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    remote: bool,
    payload: str,
) -> None:
    """Well-formed JSON the strict reader refuses (a number out of range, NaN, a name
    twice) was told "Quote it for the shell", which it was: the fix is the value."""
    if remote:  # refused before any request: nothing listens on port 9
        monkeypatch.setenv("SPOOL_URL", "http://127.0.0.1:9")
        monkeypatch.setenv("SPOOL_API_KEY", "dev-key-of-sixteen-chars")
    code, out, err = run(capsys, "enqueue", "echo", "--payload", payload)
    assert (code, out) == (2, "")
    assert "Quote it" not in err
    assert err.endswith("The JSON is well formed: change the value the message names.\n"), err


# -- 6: commands that work on the local store say so when SPOOL_URL is set ------------------


@pytest.mark.parametrize("argv", [["top", "--once"], ["schedules"], ["purge"]])
def test_local_only_commands_note_that_they_ignore_spool_url(
    db: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, argv: list[str]
) -> None:
    open_store(f"sqlite:///{db}").close()  # top and purge read a store that exists
    monkeypatch.setenv("SPOOL_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("SPOOL_API_KEY", "dev-key")
    code, _, err = run(capsys, *argv)
    assert code == 0  # a note, not a refusal: SPOOL_URL is exported for other commands
    note = err.splitlines()[0]
    assert note == (
        f"spool: note: `spool {argv[0]}` works on the local store named by SPOOL_STORE_URL "
        f"(sqlite:///{db}), not on the server at SPOOL_URL."
    )
    monkeypatch.delenv("SPOOL_URL")
    assert "note:" not in run(capsys, *argv)[2]


# -- 9: dlq redrive --type, locally and remotely; the exit codes in --help ------------------


def test_dlq_redrive_all_takes_a_type(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    dead = [enqueue(capsys, "fail", *FAIL_ONCE) for _ in range(2)]
    assert run(capsys, "worker", "--burst")[0] == 0
    code, out, err = run(capsys, "dlq", "redrive", "--all", "--type", "echo", "--json")
    assert (code, json.loads(out)["redriven"]) == (0, 0) and "redriven 0 job(s)" in err
    code, out, _ = run(capsys, "dlq", "redrive", "--all", "--type", "fail", "--json")
    assert code == 0 and sorted(json.loads(out)["ids"]) == sorted(dead)
    assert {state_of(db, i) for i in dead} == {JobState.QUEUED}


def test_remote_dlq_redrive_all_sends_the_type() -> None:
    sent: list[dict[str, Any]] = []

    class Stub:
        def redrive_all(self, **filters: Any) -> SimpleNamespace:
            sent.append(filters)
            return SimpleNamespace(ids=["j_1"], redriven=1, died_before=None)

    args = argparse.Namespace(
        dlq_command="redrive",
        all=True,
        id=None,
        queue=None,
        type="fail",
        json=True,
        died_before=None,
    )
    assert remote_cli.cmd_dlq(Stub(), args) == 0  # type: ignore[arg-type]
    chunk = remote_cli.REDRIVE_CHUNK
    assert sent == [{"queue": None, "type": "fail", "limit": chunk, "died_before": None}]


def test_help_names_every_exit_code_and_redrive_its_filters() -> None:
    text = cli.build_parser().format_help()
    assert re.search(r"^  3 .*\n\s+db status: migrations are pending", text, flags=re.M)
    assert "a second Ctrl-C stops at once (130)" in text
    redrive = subprocess.run(
        [sys.executable, "-m", "local.cli", "dlq", "redrive", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "--type" in redrive.stdout and "--queue" in redrive.stdout


# -- 10: a delay past the API's bound, in days -----------------------------------------------


def test_a_delay_past_366_days_is_refused_in_days(
    db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(capsys, "enqueue", "echo", "--delay", "400d")
    assert code == 2 and out == ""
    assert "--delay: at most 366 days (31622400 s) ahead, not '400d'" in err
    assert "31622400" not in err.replace("(31622400 s)", "")  # no pydantic wording
    assert run(capsys, "enqueue", "echo", "--delay", "366d")[0] == 0


# -- 11: the banner ----------------------------------------------------------------------------


def test_the_banner_shows_the_dashboard_and_the_export_line() -> None:
    rt = SimpleNamespace(
        settings=SimpleNamespace(store_url="sqlite:///.spool/spool.db"),
        registry=SimpleNamespace(types=lambda: ["echo", "sleep", "fail"]),
    )
    text = serve.banner("http://127.0.0.1:8123", rt, "dev-abc", True, True)  # type: ignore[arg-type]
    lines = [line.strip() for line in text.splitlines()]
    assert "ui      http://127.0.0.1:8123/ui (the dashboard: paste the API key)" in lines
    assert "export SPOOL_URL=http://127.0.0.1:8123 SPOOL_API_KEY=dev-abc" in lines
    # README's "Try it" shows the same line, for the default port.
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "export SPOOL_URL=http://127.0.0.1:8000 SPOOL_API_KEY=dev-..." in readme
    assert "<http://127.0.0.1:8000/ui>" in readme
    assert text.splitlines()[-1].startswith("Ctrl-C stops")


def test_the_banner_s_enqueue_line_names_the_spool_that_ran(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`make run` runs .venv/bin/spool, which a new terminal has not on its PATH."""
    rt = SimpleNamespace(
        settings=SimpleNamespace(store_url="sqlite:///.spool/spool.db"),
        registry=SimpleNamespace(types=lambda: ["echo"]),
    )
    monkeypatch.setattr(sys, "argv", [".venv/bin/spool", "serve"])
    text = serve.banner("http://127.0.0.1:8123", rt, "dev-abc", True, True)  # type: ignore[arg-type]
    assert '.venv/bin/spool enqueue echo --payload \'{"hello": "world"}\'' in text
    monkeypatch.setattr(sys, "argv", ["spool", "serve"])  # found on the PATH
    text = serve.banner("http://127.0.0.1:8123", rt, "dev-abc", True, True)  # type: ignore[arg-type]
    assert "  spool enqueue echo" in text


# -- 3: every setting the API reads is checked before the banner -----------------------------


def _serve(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    child = guarded_env(SPOOL_STORE_URL=f"sqlite:///{tmp_path}/serve.db", **env)
    child.pop("SPOOL_API_KEYS", None)
    return subprocess.run(
        [sys.executable, "-m", "local.cli", "serve", "--port", "0", *args],
        cwd=ROOT,
        env=child,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("variable", "value", "message", "args"),
    [
        ("SPOOL_MAX_WAITS", "abc", "SPOOL_MAX_WAITS must be a number, not 'abc'", ()),
        ("SPOOL_MAX_WAITS", "0", "SPOOL_MAX_WAITS must be at least 1, not 0", ()),
        # Long-polls could hold every thread; requests then waited 15 s and more.
        (
            "SPOOL_MAX_WAITS",
            "99999999999999999999",
            "SPOOL_MAX_WAITS=99999999999999999999 lets long-polls (?wait=) hold all 4",
            ("--threads", "4"),
        ),
        ("SPOOL_MAX_WAITS", "4", "SPOOL_MAX_WAITS=4 lets long-polls", ("--threads", "4")),
        (
            "SPOOL_HEALTH_CACHE_SECONDS",
            "abc",
            "SPOOL_HEALTH_CACHE_SECONDS must be a number, not 'abc'",
            (),
        ),
        (
            "SPOOL_HEALTH_CACHE_SECONDS",
            "abc",
            "SPOOL_HEALTH_CACHE_SECONDS must be a number, not 'abc'",
            ("--processes", "2"),
        ),
        ("SPOOL_MAX_BATCH", "0", "SPOOL_MAX_BATCH must be between 1 and 10000 jobs, not 0", ()),
        (
            "SPOOL_MAX_BODY_BYTES",
            "-1",
            "SPOOL_MAX_BODY_BYTES must be between 1024 and 10485760 bytes, not -1",
            (),
        ),
        ("SPOOL_CACHE_TTL", "nan", "SPOOL_CACHE_TTL must be a finite number", ()),
        ("SPOOL_METRICS_PUBLIC", "ture", "SPOOL_METRICS_PUBLIC must be true or false", ()),
    ],
)
def test_serve_refuses_a_bad_api_setting_before_its_banner(
    tmp_path: Path, variable: str, value: str, message: str, args: tuple[str, ...]
) -> None:
    result = _serve(tmp_path, *args, **{variable: value})
    assert result.returncode == 2, result.stderr
    assert "serving app.py" not in result.stdout  # no banner, so no 503 per request
    assert result.stderr.startswith(f"spool: {message}") and result.stderr.count("\n") == 1


# -- 5: Ctrl-C, once and twice ---------------------------------------------------------------


def _wait_for(predicate: Any, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


@pytest.mark.timeout(90)
def test_worker_first_ctrl_c_finishes_the_second_stops_at_once(db: Path) -> None:
    env = guarded_env(SPOOL_STORE_URL=f"sqlite:///{db}")
    job = subprocess.run(
        [sys.executable, "-m", "local.cli", "enqueue", "sleep", "--payload", '{"seconds": 30}'],
        cwd=ROOT,
        env={**env, "SPOOL_DEMO_HANDLERS": "1"},
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()[0]
    worker = subprocess.Popen(
        [sys.executable, "-m", "local.cli", "worker", "--concurrency", "1"],
        cwd=ROOT,
        env={**env, "SPOOL_DEMO_HANDLERS": "1"},
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _wait_for(lambda: state_of(db, job) is JobState.RUNNING)
        worker.send_signal(signal.SIGINT)
        assert worker.stderr is not None
        lines = [worker.stderr.readline(), worker.stderr.readline()]
        assert lines[1] == (
            "spool: stopping: finishing running jobs (Ctrl-C again stops at once)\n"
        ), lines
        time.sleep(0.5)
        assert worker.poll() is None  # still finishing the 30 s job
        started = time.monotonic()
        worker.send_signal(signal.SIGINT)
        assert worker.wait(10) == 130
        assert time.monotonic() - started < 5
        assert worker.stderr.read() == "spool: interrupted.\n"
    finally:
        stop(worker)
    # Abandoned, not lost: its lease lapses and a worker runs it again.
    assert state_of(db, job) is JobState.RUNNING


@pytest.fixture
def laptop_serve(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], str, str]]:
    """`spool serve` in laptop mode: (process, URL, dev key)."""
    env = guarded_env(SPOOL_STORE_URL=f"sqlite:///{tmp_path}/serve.db")
    env.pop("SPOOL_API_KEYS", None)
    served = spool_serve("--threads", "4", env=env)
    key = re.search(r"made for this run: (\S+)", served.banner)
    assert key is not None, served.banner
    try:
        yield served.proc, served.url, key.group(1)
    finally:
        stop(served.proc)


@pytest.mark.timeout(90)
def test_serve_first_ctrl_c_finishes_the_second_stops_at_once(
    laptop_serve: tuple[subprocess.Popen[str], str, str],
) -> None:
    proc, url, key = laptop_serve
    headers = {"X-API-Key": key}
    body = {"type": "sleep", "payload": {"seconds": 30}}
    job = requests.post(f"{url}/enqueue", json=body, headers=headers, timeout=10).json()["id"]

    def running() -> bool:
        reply = requests.get(f"{url}/status/{job}", headers=headers, timeout=10)
        return bool(reply.json()["state"] == "running")

    _wait_for(running)
    proc.send_signal(signal.SIGINT)
    assert proc.stderr is not None
    notice = "spool: stopping: finishing running requests and jobs (Ctrl-C again stops at once)\n"
    while (line := proc.stderr.readline()) != notice:  # past the request and job log lines
        assert line, "no notice before stderr closed"
    time.sleep(0.5)
    assert proc.poll() is None  # the emulated worker finishes its 30 s job
    proc.send_signal(signal.SIGINT)
    assert proc.wait(10) == 130
    assert proc.stderr.read().endswith("spool: interrupted.\n")


def test_an_empty_spool_api_key_is_a_missing_key(
    laptop_serve: tuple[subprocess.Popen[str], str, str],
) -> None:
    """docs/settings.md: empty means unset. Before: "an API key is visible ASCII
    characters only (no spaces)", as if a key had been given."""
    _, url, _ = laptop_serve
    result = subprocess.run(
        [sys.executable, "-m", "local.cli", "jobs"],
        cwd=ROOT,
        env=guarded_env(SPOOL_URL=url, SPOOL_API_KEY=""),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.startswith("spool: no API key given")
    assert "visible ASCII" not in result.stderr


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_serve_never_hangs_on_ctrl_c_pressed_three_times(tmp_path: Path) -> None:
    """Three SIGINTs back to back: before, one try in fifteen hung forever (the
    handler re-entered threading.Event.set under its own lock). Now each try ends:
    0 when the signals merged into one graceful stop, 130 when a second landed, or
    death by SIGINT when one lands as the interpreter finalizes (it restores the
    default handler then; a shell reports that as 130 too)."""
    env = guarded_env(SPOOL_STORE_URL=f"sqlite:///{tmp_path}/serve.db")
    env.pop("SPOOL_API_KEYS", None)
    for _ in range(10):
        served = spool_serve("--threads", "2", "--no-worker", env=env, stderr=subprocess.DEVNULL)
        try:
            for _ in range(3):
                os.kill(served.proc.pid, signal.SIGINT)
            assert served.proc.wait(20) in (0, 130, -signal.SIGINT)
        finally:
            stop(served.proc)


def test_a_signal_inside_the_handler_does_not_deadlock() -> None:
    """What a second signal does while the first one's handler runs: StopSignals takes
    no lock there, and a repeated SIGTERM changes nothing (a supervisor sends one per
    process); `stop`, which may take locks, runs once, on a thread of its own."""
    stopped = threading.Event()
    threads: list[str] = []
    nested: list[StopSignalsLike] = []

    def stop_once() -> None:
        threads.append(threading.current_thread().name)
        stopped.set()

    def wake() -> None:
        if nested:  # a SIGTERM arriving inside the first handler's wake
            inner = nested.pop()
            inner._handle(signal.SIGTERM, None)

    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        with serve.StopSignals(stop=stop_once, wake=wake) as signals:
            assert signal.getsignal(signal.SIGTERM) == signals._handle
            nested.append(signals)
            signals._handle(signal.SIGTERM, None)
            assert stopped.wait(5) and signals.requested
        assert threads == ["spool-stop"]
        # Stopping: the handler stays for the rest of the exit (a Ctrl-C stops at once).
        assert signal.getsignal(signal.SIGINT) == signals._handle
    finally:
        for signum, handler in before.items():
            signal.signal(signum, handler)
    with serve.StopSignals(stop=stop_once) as unused:
        assert signal.getsignal(signal.SIGINT) == unused._handle
    assert signal.getsignal(signal.SIGINT) == before[signal.SIGINT]  # restored: no stop asked


StopSignalsLike = serve.StopSignals


# -- a handler whose timeout the emulated worker could never give it ------------------------

LONG_HANDLERS = """
from chalicelib.handlers import handler


@handler("etl_nightly", timeout={timeout})
def etl(payload: dict) -> dict:
    return {{"ran": True}}
"""


def long_handler_env(tmp_path: Path, timeout: float) -> dict[str, str]:
    (tmp_path / "etl_jobs.py").write_text(LONG_HANDLERS.format(timeout=timeout))
    env = guarded_env(
        SPOOL_STORE_URL=f"sqlite:///{tmp_path}/serve.db",
        SPOOL_HANDLERS="etl_jobs",
        PYTHONPATH=str(tmp_path),
    )
    env.pop("SPOOL_API_KEYS", None)
    return env


def test_serve_refuses_a_handler_its_emulated_worker_could_never_run(tmp_path: Path) -> None:
    """Before: `spool serve` started, accepted the jobs, and its emulated worker (Lambda's
    900 s invocations, claiming only while the longest timeout fits) ran none of them,
    the demo `echo` jobs neither: every job stayed queued, without a word."""
    env = long_handler_env(tmp_path, 1200)
    done = subprocess.run(
        [sys.executable, "-m", "local.cli", "serve", "--port", "0"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr == (
        "spool: handler 'etl_nightly' (timeout=1200s) would never run here: `spool serve`'s "
        "emulated worker runs jobs as the Lambda worker does, in invocations of at most 900s, "
        "and a job needs its timeout plus 10s left to start, so its jobs would stay queued. "
        "Lower the timeout to at most 890s, or run `spool serve --no-worker` beside "
        "`spool worker`, which has no such bound.\n"
    )
    # What the line offers works: the API alone starts, and `spool worker` runs the job.
    served = spool_serve("--no-worker", env=env)
    try:
        key = re.search(r"made for this run: (\S+)", served.banner)
        assert key is not None, served.banner
        answer = requests.post(
            served.url + "/enqueue",
            json={"type": "etl_nightly"},
            headers={"X-API-Key": key.group(1)},
            timeout=30,
        )
        assert answer.status_code == 201, answer.text
        job_id = answer.json()["id"]
    finally:
        stop(served.proc)
    worker = subprocess.run(
        [sys.executable, "-m", "local.cli", "worker", "--burst", "--quiet"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert worker.returncode == 0, worker.stderr
    assert state_of(tmp_path / "serve.db", job_id) is JobState.SUCCEEDED


@pytest.mark.timeout(90)
def test_serve_runs_jobs_beside_a_handler_at_the_emulated_workers_bound(tmp_path: Path) -> None:
    """timeout=890 (900 s less the margin) is allowed, and the emulated worker does run
    jobs beside it: the refusal's bound is the drain's, not a stricter one."""
    served = spool_serve(env=long_handler_env(tmp_path, 890))
    try:
        key = re.search(r"made for this run: (\S+)", served.banner)
        assert key is not None, served.banner
        headers = {"X-API-Key": key.group(1)}
        made = requests.post(
            served.url + "/enqueue", json={"type": "echo"}, headers=headers, timeout=30
        )
        assert made.status_code == 201, made.text
        done = requests.get(
            f"{served.url}/status/{made.json()['id']}?wait=20", headers=headers, timeout=30
        )
        assert done.json()["state"] == "succeeded", done.text
    finally:
        stop(served.proc)

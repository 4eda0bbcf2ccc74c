"""Options typed in the wrong place, or a letter off, wherever they stand on the line.

A new user's pass found three: `spool --urll URL jobs` was told the URL was not a
command (argparse took the unknown option's value for the command); `spool db
migrate --url X` was pointed at `spool db migrate --help`, which had no --url; and
`spool top` exited 0 on Ctrl-C where every other command exits 130. Each case here
is what is said now: one `spool:` line, exit 2, the help that lists the option.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from local import cli
from tests.procs import ROOT, guarded_env, stop
from tests.test_cli_help import commands
from tests.test_cli_newuser import run


@pytest.fixture
def db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "spool.db"
    monkeypatch.setenv("SPOOL_STORE_URL", f"sqlite:///{path}")
    for name in ("SPOOL_URL", "SPOOL_API_KEY", "SPOOL_DEBUG"):
        monkeypatch.delenv(name, raising=False)
    return path


URL = "http://127.0.0.1:1"


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        # Before the command: argparse took the URL for the command's name.
        (
            ["--urll", URL, "jobs"],
            f"spool: unrecognized arguments: --urll {URL}: did you mean --url? See `spool --help`.",
        ),
        (
            ["--kye", "k" * 16, "jobs"],
            f"spool: unrecognized arguments: --kye {'k' * 16}: did you mean --key? "
            "See `spool --help`.",
        ),
        # After the command: `jobs` took the URL for its hidden `list` action.
        (
            ["jobs", "--urll", URL],
            f"spool: unrecognized arguments: --urll {URL}: did you mean --url? "
            "See `spool jobs --help`.",
        ),
        # Between a command and its subcommand: the URL was taken for the subcommand.
        (
            ["dlq", "--urll", URL, "list"],
            f"spool: unrecognized arguments: --urll {URL}: did you mean --url? "
            "Give it after `spool dlq list`: see `spool dlq list --help`.",
        ),
        (
            ["db", "--urll", "postgresql://127.0.0.1:1/x", "status"],
            "spool: unrecognized arguments: --urll postgresql://127.0.0.1:1/x: "
            "did you mean --url? See `spool db --help`.",
        ),
        # After the subcommand.
        (
            ["dlq", "list", "--urll", URL],
            f"spool: unrecognized arguments: --urll {URL}: did you mean --url? "
            "See `spool dlq list --help`.",
        ),
        (
            ["db", "migrate", "--urll", "postgresql://127.0.0.1:1/x"],
            "spool: unrecognized arguments: --urll postgresql://127.0.0.1:1/x: "
            "did you mean --url? See `spool db migrate --help`.",
        ),
    ],
)
def test_a_misspelt_option_is_named_wherever_it_stands(
    db: Path, capsys: pytest.CaptureFixture[str], argv: list[str], said: str
) -> None:
    code, out, err = run(capsys, *argv)
    assert (code, out) == (2, "")
    assert err == said + "\n"
    assert "Traceback" not in err and "invalid choice" not in err
    assert not db.exists()


def test_a_subcommand_s_option_before_it_points_at_the_subcommand_s_help(
    db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`spool dlq --url X list`: --url is `dlq list`'s, not `dlq`'s. Before: "argument
    dlq_command: invalid choice: 'X'", about the URL."""
    code, out, err = run(capsys, "dlq", "--url", URL, "list")
    assert (code, out) == (2, "")
    assert err == (
        f"spool: unrecognized arguments: --url {URL}. "
        "Give it after `spool dlq list`: see `spool dlq list --help`.\n"
    )


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        # A command's option before the command: `spool --help` does not list it.
        (["--json", "jobs"], "--json. Give it after `spool jobs`: see `spool jobs --help`."),
        (
            ["--jsn", "jobs"],
            "--jsn: did you mean --json? Give it after `spool jobs`: see `spool jobs --help`.",
        ),
        (
            ["--tenant", "acme", "dlq", "list"],
            "--tenant acme. Give it after `spool dlq list`: see `spool dlq list --help`.",
        ),
        # Nothing else typed: it was "the following arguments are required: {worker,...}".
        (["--urll"], "--urll: did you mean --url? See `spool --help`."),
        (["status", "--urll"], "--urll: did you mean --url? See `spool status --help`."),
    ],
)
def test_an_option_typed_before_its_command_or_alone_is_named(
    db: Path, capsys: pytest.CaptureFixture[str], argv: list[str], said: str
) -> None:
    code, out, err = run(capsys, *argv)
    assert (code, out) == (2, "")
    assert err == f"spool: unrecognized arguments: {said}\n"


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (["dlq", "--urll", URL], f"--urll {URL}: did you mean --url?"),
        (["dlq", "--json"], "--json."),
    ],
)
def test_a_subcommand_s_option_with_no_subcommand_names_the_subcommands(
    db: Path, capsys: pytest.CaptureFixture[str], argv: list[str], said: str
) -> None:
    """`spool dlq --urll URL`: no subcommand named yet, so the option meant is looked
    for in each; before, neither the one meant nor where it goes was said."""
    code, out, err = run(capsys, *argv)
    assert (code, out) == (2, "")
    assert err == (
        f"spool: unrecognized arguments: {said} Give it after the subcommand "
        "(list, redrive): see `spool dlq --help`.\n"
    )


def test_a_stray_word_is_not_blamed_on_a_hidden_argument(
    db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`spool jobs --json V`: V was refused as "argument action: invalid choice: 'V'
    (choose from 'list')", an argument `spool jobs --help` does not show."""
    code, out, err = run(capsys, "jobs", "--json", "extra")
    assert (code, out) == (2, "")
    assert err == "spool: unrecognized arguments: extra. See `spool jobs --help`.\n"


@pytest.mark.parametrize(
    ("argv", "command"),
    [
        (["worker", "--url", URL], "worker"),
        (["top", "--key", "k" * 16], "top"),
        (["db", "migrate", "--key", "k" * 16], "db migrate"),
    ],
)
def test_a_server_option_after_a_local_command_says_where_it_works(
    db: Path, capsys: pytest.CaptureFixture[str], argv: list[str], command: str
) -> None:
    """Before the command it was "--url and --key work with the job commands (...)";
    after it, only "unrecognized arguments". Now both say where it works."""
    code, out, err = run(capsys, *argv)
    assert (code, out) == (2, "")
    option = argv[-2]
    assert err == (
        f"spool: unrecognized arguments: {option} {argv[-1]}: {option} works with the job "
        f"commands only (enqueue, status, jobs, cancel, dlq). See `spool {command} --help`.\n"
    )


def test_an_unknown_option_before_a_real_command_is_still_refused(
    db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Only the value-as-command case changed: `spool --urll jobs` kept its message."""
    code, _, err = run(capsys, "--urll", "jobs")
    assert code == 2
    assert err == "spool: unrecognized arguments: --urll: did you mean --url? See `spool --help`.\n"


def test_a_misspelt_command_is_still_told_the_one_meant(
    db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(capsys, "--url", URL, "jbos")
    assert code == 2
    assert "'jbos' is not a command of `spool`: did you mean 'jobs'?" in err


# -- db: --url after the subcommand too ---------------------------------------------------


@pytest.mark.parametrize("sub", ["migrate", "status"])
def test_db_takes_url_after_its_subcommand_too(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], sub: str
) -> None:
    """`spool db migrate --url X` was pointed at `spool db migrate --help`, which
    had no --url; now it names the store as `spool db --url X migrate` does."""
    url = f"sqlite:///{tmp_path}/s.db"
    code, out, err = run(capsys, "db", sub, "--url", url)
    assert (code, out) == (0, "")
    assert (
        err == "nothing to migrate: only Postgres stores have migrations (--url is sqlite://...)\n"
    )


def test_db_url_after_the_subcommand_wins_over_one_before(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(capsys, "db", "--url", "postgresql://127.0.0.1:1/x", "migrate", "--url",
                       f"sqlite:///{tmp_path}/s.db")  # fmt: skip
    assert code == 0 and "sqlite://" in err


@pytest.mark.parametrize("sub", ["migrate", "status"])
def test_db_subcommand_help_lists_url(sub: str) -> None:
    """The help a db usage error points at shows the option it is about."""
    (parser,) = [p for path, p, _ in commands(cli.build_parser()) if path == ("db", sub)]
    assert "--url STORE_URL" in parser.format_help()


# -- top: Ctrl-C is 130, as for every command ----------------------------------------------


@pytest.mark.timeout(60)
def test_top_ctrl_c_exits_130_with_the_interrupted_line(tmp_path: Path) -> None:
    env = guarded_env(SPOOL_STORE_URL=f"sqlite:///{tmp_path}/top.db", SPOOL_DEMO_HANDLERS="true")
    spool = [sys.executable, "-m", "local.cli"]
    subprocess.run([*spool, "enqueue", "echo"], env=env, cwd=ROOT, check=True, capture_output=True)
    proc = subprocess.Popen(
        [*spool, "top", "--interval", "0.2"],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None and proc.stderr is not None
        deadline = time.monotonic() + 30
        while not proc.stdout.readline().startswith("spool top"):  # a frame is drawn
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()
        proc.send_signal(signal.SIGINT)
        assert proc.wait(20) == 130
        assert proc.stderr.read() == "spool: interrupted.\n"
    finally:
        stop(proc)

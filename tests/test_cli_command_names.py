"""A command that is missing or misspelt is named in words, not in argparse's.

`spool enqeue echo` said "argument {worker,enqueue,status,jobs,cancel,dlq,purge,
schedules,top,serve,db}: invalid choice: 'enqeue' (choose from 'worker', ...)", and
`spool` alone "the following arguments are required: {worker,enqueue,...}": the
parser's name for its subcommands' slot, braces and all, which a new user has to
decode. Now the line says what was typed, that it is not a command, and the one
meant when it is a letter or two off (or the commands, when none is close).
An option's own choices (`jobs --state suceeded`) keep their wording: it names the
option.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.test_cli_newuser import run

COMMANDS = "worker, enqueue, status, jobs, cancel, dlq, purge, schedules, top, serve, db"


@pytest.fixture
def db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "spool.db"
    monkeypatch.setenv("SPOOL_STORE_URL", f"sqlite:///{path}")
    for name in ("SPOOL_URL", "SPOOL_API_KEY", "SPOOL_DEBUG"):
        monkeypatch.delenv(name, raising=False)
    return path


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (
            ["enqeue", "echo"],
            "spool: 'enqeue' is not a command of `spool`: did you mean 'enqueue'? "
            "See `spool --help`.",
        ),
        (
            ["--url", "http://127.0.0.1:1", "jbos"],
            "spool: 'jbos' is not a command of `spool`: did you mean 'jobs'? See `spool --help`.",
        ),
        (
            ["frobnicate"],
            f"spool: 'frobnicate' is not a command of `spool` (its commands: {COMMANDS}). "
            "See `spool --help`.",
        ),
        (
            ["dlq", "lst"],
            "spool: 'lst' is not a command of `spool dlq`: did you mean 'list'? "
            "See `spool dlq --help`.",
        ),
        (
            ["db", "migrat"],
            "spool: 'migrat' is not a command of `spool db`: did you mean 'migrate'? "
            "See `spool db --help`.",
        ),
        ([], f"spool: `spool` needs a command: {COMMANDS}. See `spool --help`."),
        (["dlq"], "spool: `spool dlq` needs a command: list, redrive. See `spool dlq --help`."),
        (["db"], "spool: `spool db` needs a command: migrate, status. See `spool db --help`."),
    ],
)
def test_a_missing_or_misspelt_command_is_said_in_words(
    db: Path, capsys: pytest.CaptureFixture[str], argv: list[str], said: str
) -> None:
    code, out, err = run(capsys, *argv)
    assert (code, out) == (2, "")
    assert err == said + "\n"
    assert "{" not in err and "invalid choice" not in err and "arguments are required" not in err
    assert not db.exists()


def test_an_option_s_choice_keeps_naming_the_option(
    db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(capsys, "jobs", "--state", "suceeded")
    assert code == 2
    assert err.startswith("spool: argument --state: invalid choice: 'suceeded'")
    assert "did you mean 'succeeded'?" in err

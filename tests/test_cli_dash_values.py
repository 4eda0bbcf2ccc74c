"""An option's value that begins with '-' is the option's value, on every command.

argparse decides whether a word is an option before it looks at the word before
it, so `spool status ID --wait -1s` said "unrecognized arguments: -1s", and
`spool --key "$KEY" jobs` with a key from `secrets.token_urlsafe` (the way the
README and docs/self-hosting.md make one) that began with '-', one key in 64, said
"argument --key: expected one argument": a key that works as SPOOL_API_KEY was
refused as --key. An idempotency key, a queue or a tenant may begin with '-' too
(NAME_PATTERN allows it). Now the value reaches the option's own check, which
names the option and the value, or is taken.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from chalicelib.durations import parse_seconds
from local import cli, job_commands, sqs_poller
from tests.test_cli_help import commands
from tests.test_cli_newuser import run


@pytest.fixture
def db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "spool.db"
    monkeypatch.setenv("SPOOL_STORE_URL", f"sqlite:///{path}")
    monkeypatch.setenv("SPOOL_DEMO_HANDLERS", "true")
    for name in ("SPOOL_URL", "SPOOL_API_KEY", "SPOOL_DEBUG"):
        monkeypatch.delenv(name, raising=False)
    return path


# What a command needs besides the option for its line to parse: its positionals
# (after the command's name), or, for a parser with subcommands, one of them (last).
BEFORE: dict[tuple[str, ...], list[str]] = {
    ("status",): ["j_1"],
    ("cancel",): ["j_1"],
    ("enqueue",): ["echo"],
}
AFTER: dict[tuple[str, ...], list[str]] = {(): ["jobs"], ("db",): ["migrate"]}
VALUE = "-v1"


def value_options() -> list[tuple[tuple[str, ...], str, argparse.Action]]:
    """(command words, option, action) for every option of every command, `spool`
    itself included, that takes a value."""
    parser = cli.build_parser()
    found = []
    for path, command in [((), parser), *((p, c) for p, c, _ in commands(parser))]:
        for action in command._actions:
            if action.option_strings and action.nargs in (None, argparse.OPTIONAL):
                found.append((path, action.option_strings[-1], action))
    return found


OPTIONS = value_options()


def test_the_walk_sees_the_options_that_go_wrong() -> None:
    seen = {(" ".join(path), option) for path, option, _ in OPTIONS}
    assert {("", "--key"), ("status", "--wait"), ("enqueue", "--idempotency-key")} <= seen
    assert len(seen) >= 40


@pytest.mark.parametrize(
    ("path", "option", "action"),
    OPTIONS,
    ids=[f"{' '.join(p) or 'spool'} {o}" for p, o, _ in OPTIONS],
)
def test_every_option_takes_a_value_beginning_with_a_dash(
    capsys: pytest.CaptureFixture[str],
    path: tuple[str, ...],
    option: str,
    action: argparse.Action,
) -> None:
    argv = [*path, *BEFORE.get(path, []), option, VALUE, *AFTER.get(path, [])]
    try:
        parsed = cli.build_parser().parse_args(argv)
    except SystemExit:
        err = capsys.readouterr().err
        # Refused by the option's own check, in its words, naming the value.
        assert err.startswith(f"spool: argument {'/'.join(action.option_strings)}: "), err
        assert VALUE in err, err
    else:
        assert getattr(parsed, action.dest) == VALUE


def test_a_negative_wait_is_named_as_the_wait_s_value(
    db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The known case: "unrecognized arguments: -1s" sent the user to look for a
    misspelt option."""
    code, out, err = run(capsys, "status", "j_" + "0" * 32, "--wait", "-1s")
    assert (code, out) == (2, "")
    assert err.startswith("spool: argument --wait: '-1s': a duration cannot be negative"), err
    assert not db.exists()


def test_a_key_beginning_with_a_dash_is_the_key(capsys: pytest.CaptureFixture[str]) -> None:
    key = "-" + "k" * 42  # as secrets.token_urlsafe(32) makes one, one time in 64
    for argv in (
        ["--key", key, "jobs"],
        ["jobs", "--key", key],
        ["--url", "http://127.0.0.1:8000", "--key", key, "jobs"],
    ):
        assert cli.build_parser().parse_args(argv).key == key
    # `--wait` alone before another option is still `--wait` with no limit.
    parsed = cli.build_parser().parse_args(["status", "j_1", "--wait", "--json"])
    assert (parsed.wait, parsed.json) == (job_commands.NO_LIMIT, True)


def test_a_misspelt_option_after_one_that_takes_a_value_is_still_named(
    db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(capsys, "status", "j_1", "--wait", "--jsn")
    assert code == 2
    assert "unrecognized arguments: --jsn: did you mean --json?" in err


def test_an_idempotency_key_and_a_queue_beginning_with_a_dash_are_stored(
    db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ("enqueue", "echo", "--idempotency-key", "-order-7", "--queue", "-q", "--json")
    code, out, err = run(capsys, *argv)
    assert code == 0, err
    made = json.loads(out)
    assert made["idempotency_key"] == "-order-7"
    code, out, err = run(capsys, "jobs", "--queue", "-q", "--json")
    assert code == 0, err
    assert [j["id"] for j in json.loads(out)["jobs"]] == [made["id"]]


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (["--window", "-x"], "argument --window: must be a number of seconds from 0 to 300"),
        (["--wait", "-5s"], "argument --wait: must be a whole number from 0 to 20"),
        (["--wiat", "3"], "unrecognized arguments: --wiat 3: did you mean --wait?"),
    ],
)
def test_the_sqs_poller_reads_its_options_as_spool_does(
    capsys: pytest.CaptureFixture[str], argv: list[str], said: str
) -> None:
    """`python -m local.sqs_poller` (docs/aws.md) had argparse's own parser: `--window
    -x` was "expected one argument", after a usage block, where `spool` says one line."""
    with pytest.raises(SystemExit) as stopped:
        sqs_poller.main(argv)
    assert stopped.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"spool: {said}"), err
    assert len(err.splitlines()) == 1 and "usage:" not in err


@pytest.mark.parametrize("text", ["-1s", "-5", " -1h30m", "-0.5"])
def test_a_negative_duration_is_said_to_be_negative(text: str) -> None:
    """Text such as "-1s" was "not a duration like 90, '90s', ...", as if the form were
    wrong, where -1 (a number) was "a duration cannot be negative"."""
    with pytest.raises(ValueError, match="a duration cannot be negative"):
        parse_seconds(text)
    with pytest.raises(ValueError, match="is not a duration like"):
        parse_seconds("-x")

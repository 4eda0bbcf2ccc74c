"""`spool COMMAND --help` says what the command does, and for the two that start
something (serve, worker) where it reads its store, keys and handlers from.

`spool --help` listed each command with a line, but the command's own help (what a
newcomer types next) opened on its options with no word of what it does, and
`spool dlq --help` listed `{list,redrive}` with nothing beside either.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from collections.abc import Iterator

import pytest

from local import cli
from tests.procs import ROOT, guarded_env


def commands(
    parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser, argparse._SubParsersAction]]:  # type: ignore[type-arg]
    """Every (sub)command under `parser`: its words, its parser and the action listing it."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                yield (*path, name), child, action
                yield from commands(child, (*path, name))


ALL = list(commands(cli.build_parser()))


def test_the_walk_sees_nested_commands() -> None:
    paths = {" ".join(path) for path, _, _ in ALL}
    assert {"serve", "worker", "dlq list", "dlq redrive", "db migrate", "db status"} <= paths


@pytest.mark.parametrize("entry", ALL, ids=lambda e: " ".join(e[0]))
def test_each_command_s_help_opens_with_what_it_does(
    entry: tuple[tuple[str, ...], argparse.ArgumentParser, argparse._SubParsersAction],  # type: ignore[type-arg]
) -> None:
    path, parser, listing = entry
    assert parser.description, f"`spool {' '.join(path)} --help` does not say what it does"
    lines = {a.dest: a.help for a in listing._choices_actions}
    assert lines.get(path[-1]), f"`spool {' '.join(path[:-1])} --help` lists {path[-1]} bare"


def _help(*words: str) -> str:
    ran = subprocess.run(
        [sys.executable, "-m", "local.cli", *words, "--help"],
        cwd=ROOT, env=guarded_env(), capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert ran.returncode == 0, ran.stderr
    return ran.stdout


def test_serve_help_says_where_the_key_and_the_store_come_from() -> None:
    text = " ".join(_help("serve").split())
    assert "SPOOL_API_KEYS" in text and "development key" in text
    assert "SPOOL_STORE_URL" in text and "sqlite:///.spool/spool.db" in text
    assert "/ui" in text and "Ctrl-C" in text


def test_worker_help_says_where_the_jobs_and_handlers_come_from() -> None:
    text = " ".join(_help("worker").split())
    assert "SPOOL_STORE_URL" in text and "SPOOL_HANDLERS" in text
    assert "SPOOL_DEMO_HANDLERS" in text and "Ctrl-C" in text


def test_top_help_says_it_reads_the_local_store_not_the_server() -> None:
    text = " ".join(_help("top").split())
    assert "SPOOL_STORE_URL" in text and "SPOOL_URL" in text


def test_version_prints_the_installed_version() -> None:
    """`spool --version` was "the following arguments are required: command", exit 2."""
    import importlib.metadata

    ran = subprocess.run(
        [sys.executable, "-m", "local.cli", "--version"],
        cwd=ROOT, env=guarded_env(), capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout == f"spool {importlib.metadata.version('spool')}\n"


@pytest.mark.parametrize(
    ("words", "names"),
    [(["dlq"], ["list", "redrive"]), (["db"], ["migrate", "status"]), ([], ["worker", "serve"])],
)
def test_a_missing_subcommand_is_named_by_its_choices(words: list[str], names: list[str]) -> None:
    """`spool dlq` said "the following arguments are required: dlq_command", the name
    of a variable in local/cli.py."""
    ran = subprocess.run(
        [sys.executable, "-m", "local.cli", *words],
        cwd=ROOT, env=guarded_env(), capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert ran.returncode == 2
    assert "_command" not in ran.stderr and "required: command" not in ran.stderr
    assert all(name in ran.stderr for name in names), ran.stderr

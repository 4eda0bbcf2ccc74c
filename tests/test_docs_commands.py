"""Every `spool` command line in the README and docs/*.md parses as written.

tests/test_client_docs.py runs docs/client.md's and the README's "Try it" lines
against a server; the rest (the README's command-line reference, self-hosting,
handlers, operations, AWS) were read by nobody but people, so an option renamed
or dropped left them naming one `spool` refuses. Each is parsed here by the real
parser, placeholders (`j_...`, `URL`, `KEY`) filled in.
"""

from __future__ import annotations

import argparse
import re
import shlex

import pytest

from local import cli
from tests.test_docs import DOCS, ROOT, _commands, shell_blocks

PLACEHOLDERS = {"j_...": "j_" + "0" * 32, "URL": "http://127.0.0.1:8000", "KEY": "dev-key"}


def spool_lines() -> list[tuple[str, list[str]]]:
    """(where, argv) of every `spool` command in a shell block: leading VAR=value
    assignments skipped, `.venv/bin/` dropped, what follows a pipe, `&` or `;` cut."""
    found = []
    for doc in DOCS:
        for block in shell_blocks(doc):
            for command in _commands(block):
                words = shlex.split(command, comments=True)
                while words and re.match(r"[A-Za-z_]\w*=", words[0]):
                    words = words[1:]
                for stop in ("|", "||", "&&", ">", ";", "&"):
                    if stop in words:
                        words = words[: words.index(stop)]
                if not words or words[0].removeprefix(".venv/bin/") != "spool":
                    continue
                argv = [PLACEHOLDERS.get(w, w) for w in words[1:]]
                found.append((f"{doc.relative_to(ROOT)}: {' '.join(words)}", argv))
    return found


LINES = spool_lines()


def test_the_docs_show_spool_lines_from_several_pages() -> None:
    pages = {where.split(":")[0] for where, _ in LINES}
    assert len(LINES) >= 30 and {"README.md", "docs/self-hosting.md"} <= pages


@pytest.mark.parametrize(("where", "argv"), LINES, ids=[w for w, _ in LINES])
def test_each_spool_line_parses(where: str, argv: list[str]) -> None:
    try:
        cli.build_parser().parse_args(argv)
    except SystemExit as refused:
        pytest.fail(f"{where}: spool refuses its arguments (exit {refused.code})")


def undocumented_options(
    parser: argparse.ArgumentParser, docs: str, path: str = "spool"
) -> list[str]:
    """`spool ... --option` for each option in the --help tree that no page names."""
    missing = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                missing += undocumented_options(sub, docs, f"{path} {name}")
        elif action.help != argparse.SUPPRESS:
            for option in action.option_strings:
                if option.startswith("--") and option != "--help" and option not in docs:
                    missing.append(f"{path} {option}")
    return missing


def test_every_option_of_the_command_line_is_named_in_the_docs() -> None:
    """The docs showed no `enqueue --priority` or `--idempotency-key`, no `worker
    --quiet` and no `top --iterations`: a reader learnt of them only from --help."""
    docs = "".join(page.read_text(encoding="utf-8") for page in DOCS)
    missing = undocumented_options(cli.build_parser(), docs)
    assert not missing, f"no page of README.md or docs/ names {missing}"


def test_the_option_check_sees_an_option_left_out() -> None:
    parser = argparse.ArgumentParser(prog="spool")
    sub = parser.add_subparsers()
    sub.add_parser("jobs").add_argument("--state")
    assert undocumented_options(parser, "spool jobs --stat") == ["spool jobs --state"]
    assert undocumented_options(parser, "spool jobs --state queued") == []

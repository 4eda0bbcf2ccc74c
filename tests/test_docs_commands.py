"""Every `spool` command line in the README and docs/*.md parses as written.

tests/test_client_docs.py runs docs/client.md's and the README's "Try it" lines
against a server; the rest (the README's command-line reference, self-hosting,
handlers, operations, AWS) were read by nobody but people, so an option renamed
or dropped left them naming one `spool` refuses. Each is parsed here by the real
parser, placeholders (`j_...`, `URL`, `KEY`) filled in. The blocks' other commands
of this checkout are held to it too: a `make` target the Makefile has, a `python -m`
module that exists and declares each option given it, a script that is there, and a
`python -c` line that runs.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from chalicelib.models import DEFAULT_TENANT
from local import cli, remote_cli
from local.cli_errors import UsageError
from tests.procs import guarded_env
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
def test_each_spool_line_parses(
    where: str, argv: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Parsed, and past the checks `spool` makes before it runs anything: `--url`/`--key`
    on a command that only works locally, `--key` with no server named (SPOOL_URL unset,
    as in a fresh shell) and `--tenant` on a server's jobs are refused (exit 2)."""
    monkeypatch.delenv("SPOOL_URL", raising=False)
    try:
        args = cli.build_parser().parse_args(argv)
    except SystemExit as refused:
        pytest.fail(f"{where}: spool refuses its arguments (exit {refused.code})")
    try:
        url = remote_cli.target(args)
    except UsageError as refused:
        pytest.fail(f"{where}: spool refuses it: {refused}")
    local_tenant = DEFAULT_TENANT if args.command == "enqueue" else None
    if url is not None:
        assert getattr(args, "tenant", None) in (None, local_tenant), f"{where}: --tenant"


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


# -- the other commands of the shell blocks: make targets, python -m, python -c -------


def shell_commands() -> list[tuple[str, list[str]]]:
    """(where, words) of every command in the pages' shell blocks, leading VAR=value
    assignments skipped, each piece of a pipe or `&&`/`;` list a command of its own."""
    found = []
    for doc in DOCS:
        for block in shell_blocks(doc):
            for command in _commands(block):
                words = shlex.split(command, comments=True)
                piece: list[str] = []
                for word in [*words, ";"]:
                    if word not in ("|", "||", "&&", ";", "&"):
                        piece.append(word)
                        continue
                    while piece and re.match(r"[A-Za-z_]\w*=", piece[0]):
                        piece = piece[1:]
                    if piece:
                        found.append((f"{doc.relative_to(ROOT)}: {' '.join(piece)}", piece))
                    piece = []
    return found


COMMANDS = shell_commands()
PYTHONS = ("python", "python3", ".venv/bin/python")


def makefile_targets() -> set[str]:
    text = (ROOT / "Makefile").read_text(encoding="utf-8")
    return set(re.findall(r"^([A-Za-z][\w-]*)\s*:(?!=)", text, flags=re.M))


def test_each_make_target_the_docs_name_is_in_the_makefile() -> None:
    targets = makefile_targets()
    assert {"run", "venv", "pytest"} <= targets  # the reading sees the Makefile
    named = [(where, w[1:]) for where, w in COMMANDS if w[0] == "make"]
    assert len(named) >= 5
    for where, args in named:
        goals = [a for a in args if not a.startswith("-") and "=" not in a]
        assert set(goals) <= targets, f"{where}: no such make target {set(goals) - targets}"


def _module_file(module: str) -> Path | None:
    base = ROOT.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__main__.py"):
        if candidate.exists():
            return candidate
    return None


def test_each_python_module_the_docs_run_is_there_and_takes_its_options() -> None:
    """`python -m bench.X --flag`: the module is in the checkout and its source
    declares every option the line gives it (a renamed flag left the line failing)."""
    runs = [(where, w) for where, w in COMMANDS if w[0] in PYTHONS and w[1:2] == ["-m"]]
    assert len(runs) >= 10
    for where, words in runs:
        module = words[2]
        if module.split(".")[0] not in ("bench", "local", "chalicelib", "tests"):
            continue  # another project's (build, pip): not ours to check
        source = _module_file(module)
        assert source is not None, f"{where}: no module {module} in the checkout"
        text = source.read_text(encoding="utf-8")
        for option in (w.split("=")[0] for w in words[3:] if w.startswith("--")):
            assert f'"{option}"' in text, f"{where}: {module} declares no {option}"


def test_each_script_the_docs_run_is_there() -> None:
    scripts = [(where, w) for where, w in COMMANDS if w[0].startswith("bench/")]
    scripts += [(where, w[1:]) for where, w in COMMANDS if w[0] in PYTHONS and w[1].endswith(".py")]
    assert scripts
    for where, words in scripts:
        assert (ROOT / words[0]).is_file(), f"{where}: no file {words[0]}"


def test_each_python_one_liner_runs(tmp_path: Path) -> None:
    """`python -c CODE` lines (a key, a webhook secret) run as written."""
    lines = [(where, w[2]) for where, w in COMMANDS if w[0] in PYTHONS and w[1:2] == ["-c"]]
    fed = [(where, code) for where, code in lines if "sys.stdin" not in code]
    assert any("new_secret" in code for _, code in fed)
    env = guarded_env()
    env["PYTHONPATH"] = f"{env.get('PYTHONPATH', '')}{os.pathsep}{ROOT}"  # the guard's kept
    for where, code in fed:
        ran = subprocess.run(
            [sys.executable, "-c", code],
            cwd=tmp_path, env=env,
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert ran.returncode == 0 and ran.stdout.strip(), f"{where}: {ran.stderr}"

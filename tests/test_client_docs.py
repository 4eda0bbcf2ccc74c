"""docs/client.md and the README's "Try it" run as written, against a real `spool serve`.

Its Python blocks run in tests/test_doc_samples.py (every page's, the same way: a
fresh interpreter with SPOOL_URL and SPOOL_API_KEY set, as the page tells the reader
to); here the `spool` command lines run in order,
`j_...` standing for the id the last `spool enqueue` printed.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.apikit import KEY_A
from tests.client_servers import serve
from tests.procs import ROOT, Served, guarded_env, stop

CLIENT_DOC = ROOT / "docs" / "client.md"
README = ROOT / "README.md"
BIN = Path(sys.executable).parent


def blocks(path: Path, language: str) -> list[str]:
    text = path.read_text(encoding="utf-8")
    return re.findall(rf"^```{language}\n(.*?)^```", text, flags=re.M | re.S)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    folder = tmp_path_factory.mktemp("client-docs")
    server = serve(f"sqlite:///{folder}/spool.db", folder / "serve.log")
    try:
        yield server
    finally:
        stop(server.proc)


@pytest.fixture
def env(served: Served) -> dict[str, str]:
    child = guarded_env(SPOOL_URL=served.url, SPOOL_API_KEY=KEY_A)
    child["PATH"] = f"{BIN}{os.pathsep}{child.get('PATH', '')}"  # `spool` and `python3`
    child.pop("SPOOL_STORE_URL", None)
    return child


def test_the_page_has_examples() -> None:
    """Its Python blocks run in tests/test_doc_samples.py, with every other page's."""
    assert len(blocks(CLIENT_DOC, "python")) >= 4 and blocks(CLIENT_DOC, "sh")


def _spool_lines(path: Path) -> list[str]:
    lines = []
    for block in blocks(path, "sh"):
        if "id=$(" in block:  # a script: test_the_wait_script_runs runs it whole
            continue
        for line in block.splitlines():
            command = line.split("  #")[0].strip()
            if command.startswith(("spool ", ".venv/bin/spool ")):
                lines.append(command.removeprefix(".venv/bin/"))
    return lines


def _run_in_order(lines: list[str], env: dict[str, str], cwd: Path) -> None:
    last_id = None
    for command in lines:
        if "j_..." in command:
            assert last_id, f"{command}: no job enqueued before it"
            command = command.replace("j_...", last_id)
        ran = subprocess.run(
            shlex.split(command), cwd=cwd, env=env, capture_output=True, text=True, timeout=120
        )
        allowed = {0, 4} if "--wait" in command else {0}  # 4: waited, and it died
        assert ran.returncode in allowed, f"{command}: {ran.stderr}"
        if command.startswith("spool enqueue"):
            found = re.search(r"\bj_[0-9a-f]{32}\b", ran.stdout)
            assert found, ran.stdout
            last_id = found.group(0)


def test_the_command_lines_run_in_order(env: dict[str, str], tmp_path: Path) -> None:
    lines = _spool_lines(CLIENT_DOC)
    assert any(line.startswith("spool cancel") for line in lines)
    _run_in_order(lines, env, tmp_path)


def test_the_wait_script_runs(env: dict[str, str], tmp_path: Path) -> None:
    [script] = [b for b in blocks(CLIENT_DOC, "sh") if "id=$(" in b]
    ran = subprocess.run(
        ["bash", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert ran.returncode == 0, ran.stderr
    assert '"state": "succeeded"' in (tmp_path / "result.json").read_text()


def test_the_readme_try_it_runs(env: dict[str, str], tmp_path: Path) -> None:
    text = README.read_text(encoding="utf-8")
    try_it = text.split("## Try it", 1)[1].split("\n## ", 1)[0]
    section = tmp_path / "try_it.md"
    section.write_text(try_it, encoding="utf-8")
    lines = _spool_lines(section)
    assert lines, "README's Try it shows no spool command"
    _run_in_order(lines, env, tmp_path)
    [code] = blocks(section, "python")
    ran = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env={**env, "PYTHONPATH": f"{env.get('PYTHONPATH', '')}{os.pathsep}{ROOT}"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert ran.returncode == 0 and "succeeded" in ran.stdout, ran.stderr

"""The README's "Try it" as a new user types it: the `export` line pasted from the
banner of a keyless `spool serve` (what `make run` starts), then each `spool` line
in a shell, from a folder where `.venv/bin/spool` is the command.

tests/test_client_docs.py runs the same lines with SPOOL_URL and SPOOL_API_KEY put in
the environment by the test, and tests/test_readme_curls.py sends the curl lines; this
one checks the two steps those skip: that the banner's own lines (its `export`, its
`.venv/bin/spool enqueue`, its two curl lines) work pasted into a shell as printed,
and that what a README line's comment shows as its output (`# j_...  queued
created`) is what the command prints.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.procs import ROOT, Served, guarded_env, read_banner, stop

README = ROOT / "README.md"
ID = re.compile(r"\bj_[0-9a-f]{32}\b")


def try_it_lines() -> list[tuple[str, str]]:
    """(command, comment) of each line of the README's first shell block under
    "## Try it", in order."""
    section = README.read_text(encoding="utf-8").split("## Try it", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"^```sh\n(.*?)^```", section, flags=re.M | re.S)
    assert block, "README's Try it has no shell block"
    lines = []
    for line in block.group(1).splitlines():
        command, _, comment = line.partition("  #")
        if command.strip():
            lines.append((command.strip(), comment.strip()))
    return lines


@pytest.fixture(scope="module")
def laptop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Served, Path]]:
    """A keyless `spool serve` on its own SQLite file, and a folder holding `.venv`
    (this interpreter's environment) for the README's `.venv/bin/spool` lines."""
    folder = tmp_path_factory.mktemp("newuser-s46-docs")
    env = guarded_env(SPOOL_STORE_URL=f"sqlite:///{folder}/spool.db", SPOOL_DEMO_HANDLERS="true")
    for name in ("SPOOL_API_KEYS", "SPOOL_METRICS_KEYS", "SPOOL_API_KEYS_FILE", "SPOOL_URL"):
        env.pop(name, None)
    (folder / ".venv").symlink_to(Path(sys.prefix), target_is_directory=True)
    log = folder / "serve.log"
    # As `make run` starts it: `.venv/bin/spool serve`, which the banner's lines name.
    with log.open("w", encoding="utf-8") as errors:  # a file: the request log cannot fill a pipe
        proc = subprocess.Popen(
            [".venv/bin/spool", "serve", "--port", "0"],
            cwd=folder,
            env={**env, "PYTHONPATH": str(ROOT)},
            stdout=subprocess.PIPE,
            stderr=errors,
            text=True,
        )
    banner = read_banner(proc)
    found = re.search(r"serving app\.py on (http://127\.0\.0\.1:\d+)", banner)
    if found is None:
        stop(proc)
        raise AssertionError(f"spool serve did not start:\n{banner}{log.read_text()}")
    served = Served(proc, banner, found.group(1))
    try:
        yield served, folder
    finally:
        stop(served.proc)


def shell(folder: Path, script: str) -> subprocess.CompletedProcess[str]:
    """SCRIPT in bash from FOLDER, as typed in a fresh terminal (no SPOOL_* of the
    test's own), running this checkout's code."""
    env = guarded_env(PYTHONPATH=str(ROOT))
    for name in [n for n in env if n.startswith("SPOOL_")]:
        del env[name]
    return subprocess.run(
        ["bash", "-c", script], cwd=folder, env=env, capture_output=True, text=True, timeout=120
    )


def banner_lines(banner: str, start: str) -> list[str]:
    return [line.strip() for line in banner.splitlines() if line.strip().startswith(start)]


def test_the_try_it_block_starts_with_the_export_line_the_banner_prints(
    laptop: tuple[Served, Path],
) -> None:
    served, _ = laptop
    [(first, _)] = try_it_lines()[:1]
    [export] = banner_lines(served.banner, "export ")

    # The README shows the banner's line with the key elided: the same words otherwise.
    def same(line: str) -> str:
        return re.sub(r"dev-\S+", "dev-...", re.sub(r"127\.0\.0\.1:\d+", "127.0.0.1:PORT", line))

    assert same(export) == same(first), (export, first)


@pytest.mark.skipif(shutil.which("bash") is None, reason="the README's lines are shell lines")
def test_try_it_runs_pasted_into_a_shell_and_prints_what_its_comments_show(
    laptop: tuple[Served, Path],
) -> None:
    served, folder = laptop
    [export] = banner_lines(served.banner, "export ")
    last_id = ""
    for command, comment in try_it_lines()[1:]:
        assert command.startswith(".venv/bin/spool "), command
        if "j_..." in command:
            assert last_id, f"{command}: no job enqueued before it"
            command = command.replace("j_...", last_id)
        ran = shell(folder, f"{export}\n{command}")
        assert ran.returncode == 0, (command, ran.stdout, ran.stderr)
        assert "Traceback" not in ran.stderr
        if " enqueue " in command:
            found = ID.search(ran.stdout)
            assert found, ran.stdout
            last_id = found.group(0)
        if comment.startswith("j_..."):  # an output line the comment shows word for word
            expected = re.escape(comment).replace(re.escape("j_..."), ID.pattern)
            assert re.fullmatch(expected, ran.stdout.strip()), (comment, ran.stdout)
        elif comment.startswith("the job"):  # status: the job, its result, its attempts
            assert last_id in ran.stdout and "result" in ran.stdout and "attempts" in ran.stdout
        elif "a page of your jobs" in comment:
            assert last_id in ran.stdout or ID.search(ran.stdout), ran.stdout


@pytest.mark.skipif(shutil.which("curl") is None, reason="the banner's lines are curl lines")
def test_the_banner_s_own_lines_work_pasted_as_printed(laptop: tuple[Served, Path]) -> None:
    served, folder = laptop
    [export] = banner_lines(served.banner, "export ")
    [enqueue_line] = banner_lines(served.banner, ".venv/bin/spool enqueue")
    ran = shell(folder, f"{export}\n{enqueue_line}")
    assert ran.returncode == 0 and ID.search(ran.stdout), (ran.stdout, ran.stderr)
    post, status = banner_lines(served.banner, "curl ")
    ran = shell(folder, post)
    assert ran.returncode == 0, ran.stderr
    found = re.search(r'"id":\s*"(j_[0-9a-f]{32})"', ran.stdout)
    assert found, ran.stdout
    ran = shell(folder, status.replace("<id>", found.group(1)))
    assert ran.returncode == 0 and '"state": "succeeded"' in ran.stdout.replace('":"', '": "'), (
        ran.stdout
    )

"""A SPOOL_HANDLERS module whose import registers no handler is named in a warning
when the process loads it.

Before, `spool worker` and `spool serve` started as if all were well: a module whose
job function lacked its `@handler(...)` (or a package whose handlers live in a
submodule it does not import) gave no job type, and the first sign was each of its
jobs refused at enqueue, or buried by a worker, as "no handler for 'TYPE'".
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.procs import SPOOL, guarded_env

WARNING = "SPOOL_HANDLERS: importing {!r} registered no handler: decorate each job function"


def worker(folder: Path, handlers: str) -> subprocess.CompletedProcess[str]:
    env = guarded_env(SPOOL_STORE_URL=f"sqlite:///{folder}/spool.db", SPOOL_HANDLERS=handlers)
    env.pop("SPOOL_URL", None)
    return subprocess.run(
        [str(SPOOL), "worker", "--burst", "--quiet"],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def write_modules(folder: Path) -> None:
    (folder / "undecorated.py").write_text("def send_welcome(payload):\n    return payload\n")
    (folder / "jobs").mkdir()
    (folder / "jobs" / "__init__.py").write_text("")  # the handlers are in jobs.mail
    (folder / "jobs" / "mail.py").write_text(
        "from chalicelib.handlers import handler\n\n\n"
        "@handler('s61c_welcome')\n"
        "def welcome(payload):\n"
        "    return payload\n"
    )


def test_a_module_without_a_handler_is_named_at_start(tmp_path: Path) -> None:
    write_modules(tmp_path)
    done = worker(tmp_path, "undecorated")
    assert done.returncode == 0, done.stderr
    assert WARNING.format("undecorated") in done.stderr, done.stderr
    assert "WARNING" in done.stderr and "Traceback" not in done.stderr


def test_a_package_whose_handlers_are_in_a_submodule_is_named(tmp_path: Path) -> None:
    write_modules(tmp_path)
    done = worker(tmp_path, "jobs")
    assert WARNING.format("jobs") in done.stderr, done.stderr


def test_modules_that_register_or_were_imported_by_an_earlier_entry_are_not(
    tmp_path: Path,
) -> None:
    """jobs.mail registers; `jobs` is imported by it first, so listing it after says
    nothing about what it holds."""
    write_modules(tmp_path)
    done = worker(tmp_path, "jobs.mail,jobs")
    assert done.returncode == 0, done.stderr
    assert "registered no handler" not in done.stderr, done.stderr

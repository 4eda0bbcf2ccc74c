"""A handler module under `chalicelib/` of another copy of the project was "not found".

docs/handlers.md puts shipped handlers under `chalicelib/` (`SPOOL_HANDLERS=
chalicelib.jobs`). In a copy of the project whose virtualenv's Spool is installed from
another checkout, `spool worker` said "cannot import 'chalicelib.jobs'
(ModuleNotFoundError ...): ... from the working directory (the `spool` command adds
it)", with ./chalicelib/jobs.py right there: `chalicelib` itself was already imported
from the installed checkout, so the working directory's was never looked at. The
line now says where `chalicelib` came from and that the working directory's copy is
not used.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.procs import ROOT, guarded_env

SPOOL = Path(sys.executable).with_name("spool")


def test_a_module_in_a_shadowed_copy_of_chalicelib_is_said_so(tmp_path: Path) -> None:
    (tmp_path / "chalicelib").mkdir()
    (tmp_path / "chalicelib" / "__init__.py").write_text("")
    (tmp_path / "chalicelib" / "jobs.py").write_text("")
    done = subprocess.run(
        [str(SPOOL), "worker", "--burst"],
        cwd=tmp_path,
        env=guarded_env(
            PYTHONPATH=str(ROOT),
            SPOOL_HANDLERS="chalicelib.jobs",
            SPOOL_STORE_URL=f"sqlite:///{tmp_path / 'spool.db'}",
        ),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, done.stderr
    assert f"'chalicelib' is imported from {ROOT / 'chalicelib'}" in done.stderr, done.stderr
    assert f"not {tmp_path / 'chalicelib'}" in done.stderr, done.stderr
    assert done.stderr.count("\n") == 1

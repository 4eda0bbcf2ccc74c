"""The processes tests start keep their compiled modules, outside the checkout, even
when the shell set PYTHONDONTWRITEBYTECODE (tests/procs.py's bytecode_kept): without
it every `spool serve`, `spool worker` and CLI run a test started compiled Spool anew.
"""

from __future__ import annotations

import os
import subprocess
import sys

from tests.procs import PYCACHE, ROOT, bytecode_kept, guarded_env


def test_a_shell_without_bytecode_gives_children_a_cache_outside_the_checkout() -> None:
    kept = bytecode_kept({"PYTHONDONTWRITEBYTECODE": "1", "HOME": "/h"})
    assert kept == {"PYTHONPYCACHEPREFIX": str(PYCACHE), "HOME": "/h"}
    assert PYCACHE.is_relative_to(ROOT / ".pytest_cache")  # ignored by git, `make clean`s


def test_a_shell_s_own_choices_stand() -> None:
    assert bytecode_kept({"HOME": "/h"}) == {"HOME": "/h"}  # __pycache__ as usual
    both = {"PYTHONDONTWRITEBYTECODE": "1", "PYTHONPYCACHEPREFIX": "/elsewhere"}
    assert bytecode_kept(both) == both
    assert bytecode_kept({"PYTHONDONTWRITEBYTECODE": ""}) == {"PYTHONDONTWRITEBYTECODE": ""}


def test_a_child_of_this_session_writes_its_bytecode_and_none_into_the_checkout() -> None:
    """Whatever this shell set, a child a test starts may cache its bytecode, and it
    goes to __pycache__ (the shell allowed it there) or under PYCACHE, never both
    forbidden (sys.dont_write_bytecode with no prefix: compiled anew each start)."""
    code = "import sys; print(sys.dont_write_bytecode, sys.pycache_prefix)"
    shown = subprocess.run(
        [sys.executable, "-c", code],
        env=guarded_env(),
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout.split()
    assert shown[0] == "False"
    if os.environ.get("PYTHONPYCACHEPREFIX") == str(PYCACHE):
        assert shown[1] == str(PYCACHE)

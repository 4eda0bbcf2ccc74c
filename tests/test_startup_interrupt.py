"""Ctrl-C while the `spool` command is still loading says one line, not a traceback.

Found by a chaos run (helper E, stop 41): SIGINT in the first half second of `spool
serve` or `spool worker` arrived while local/cli.py was still importing the engine
(pydantic, the stores), before main() could catch it, and printed a 20-line traceback
of an import ending in KeyboardInterrupt. The command's entry point now loads the
command line inside its own guard: "spool: interrupted.", exit 130, as a Ctrl-C later on.
(The interpreter's own start-up and the script pip writes, the first few tens of
milliseconds, come before any code of Spool's and stay unguarded.)

The interrupt is raised by an import hook at a fixed module, so the test does not
depend on when a real signal lands.
"""

from __future__ import annotations

import subprocess
import sys
import tomllib

from tests.procs import ROOT, guarded_env

# Raise KeyboardInterrupt when the engine's models are first imported, as a Ctrl-C
# during that import would; then run the entry point pyproject.toml gives `spool`.
CHILD = """
import importlib, sys

class CtrlC:
    def find_spec(self, name, path=None, target=None):
        if name == "chalicelib.models":
            raise KeyboardInterrupt
        return None

sys.meta_path.insert(0, CtrlC())
module, _, function = sys.argv[1].partition(":")
sys.argv[1:] = ["worker", "--burst"]
getattr(importlib.import_module(module), function)()
"""


def _entry_point() -> str:
    with open(ROOT / "pyproject.toml", "rb") as file:
        return str(tomllib.load(file)["project"]["scripts"]["spool"])


def test_ctrl_c_while_the_command_loads_says_one_line_and_exits_130() -> None:
    child = subprocess.run(
        [sys.executable, "-c", CHILD, _entry_point()],
        cwd=ROOT,
        env=guarded_env(PYTHONPATH=str(ROOT)),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "Traceback" not in child.stderr, child.stderr
    assert child.stderr == "spool: interrupted.\n"  # with its period, as every later Ctrl-C
    assert child.returncode == 130


def test_the_entry_point_exits_as_the_command_line_does_when_interrupted() -> None:
    from local import cli_errors, entry

    assert entry.EXIT_INTERRUPTED == cli_errors.EXIT_INTERRUPTED

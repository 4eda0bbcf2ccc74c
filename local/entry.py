"""The `spool` command's entry point: the command line loaded under a Ctrl-C guard.

Loading local.cli and then the engine (pydantic, the stores, the HTTP edge; loaded
once the arguments are parsed, by the commands that open the local store) takes about
half a second, in which a Ctrl-C (`spool serve`, then a second thought) landed before
main() could catch it and printed a 20-line traceback of an import. This module imports
nothing of Spool's before its guard, so the interrupt is said as main() says it.
"""

from __future__ import annotations

import contextlib
import os
import sys

# local.cli_errors.EXIT_INTERRUPTED, written out: importing that module is part of
# what a Ctrl-C here interrupts.
EXIT_INTERRUPTED = 130


def console() -> None:
    """`spool`: load the command line, then run it (local.cli.console)."""
    try:
        from local import cli
    except KeyboardInterrupt:
        with contextlib.suppress(OSError):  # no stderr left to say it on
            os.write(2, b"spool: interrupted.\n")  # as cli_errors says it later on
        sys.exit(EXIT_INTERRUPTED)
    cli.console()

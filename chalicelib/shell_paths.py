"""Paths in settings written as a shell would read them (`~/spool.db`, `$HOME/x`).

Nothing expands a setting's `~` or `$NAME`: a URL is not shell text, and a `.env` or
systemd environment file passes `$HOME` on as it is. `sqlite:///~/spool.db` made a
folder named `~` in the working directory and kept the store there without a word
(and `rm -rf ~` to clean it up removes a home). The settings that name a path refuse
such text with the path meant (storage.sqlite_path, blobs.check_settings,
builtin/setting_values.ca_file).
"""

from __future__ import annotations

import os
import re

# $NAME or ${NAME}, as a shell expands it: `x$.db` or `a$1` are names, not variables.
_VARIABLE = re.compile(r"\$(\{[A-Za-z_][A-Za-z0-9_]*\}|[A-Za-z_][A-Za-z0-9_]*)")


def refusal(path: str, shown: str = "{}") -> str | None:
    """Why `path` cannot be meant as written, and what to write instead (`shown`
    formats the path meant: "sqlite:///{}" for a store URL), or None. Only a leading
    `~` (as a shell reads one) and a $NAME or ${NAME} count."""
    found = ["'~'"] if path.startswith("~") else []
    variable = _VARIABLE.search(path)
    if variable is not None:
        found.append(repr(variable.group(0)))
    if not found:
        return None
    meant = os.path.expandvars(os.path.expanduser(path))
    return (
        f"{path!r} holds {' and '.join(found)}, which only a shell expands, and no shell "
        f"reads a setting: write the path itself, {shown.format(meant)}"
    )

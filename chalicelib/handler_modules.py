"""SPOOL_HANDLERS entries read as module names, checked before any is imported.

A new user names the file they wrote (`myapp/jobs.py`) or separates modules as a
shell list would (`a b`, `a; b`), or names the function as other tools take it
(`myapp.jobs:charge`, gunicorn's and uvicorn's form). importlib would then fail with a message about
the module (a relative import, "'jobs' is not a package"), after running `jobs`
for "jobs.py", and the line said to fix a module that was fine (or, for the
function's name, to put a module that was there on PYTHONPATH). This module says
what the setting should read instead, before anything is imported.
"""

from __future__ import annotations

import re

from chalicelib.config import ConfigError

# What separates modules in a list a user might write instead of SPOOL_HANDLERS's commas.
_OTHER_SEPARATORS = re.compile(r"[\s;]+")


def check(names: tuple[str, ...]) -> None:
    """Raise ConfigError naming the first entry that is a path, a list or a function, and
    the fix."""
    for name in names:
        if _OTHER_SEPARATORS.search(name):
            parts = [p for p in _OTHER_SEPARATORS.split(name) if p]
            meant = _replaced(names, name, ",".join(parts))
            raise ConfigError(
                f"SPOOL_HANDLERS: {name!r} is not a module name: separate modules with "
                f"commas (SPOOL_HANDLERS={meant})"
            )
        if "/" in name or "\\" in name or name.endswith(".py"):
            meant = _replaced(names, name, module_of(name))
            raise ConfigError(
                f"SPOOL_HANDLERS: {name!r} is a file path; name the module as an import "
                f"statement would, from the working directory or PYTHONPATH "
                f"(SPOOL_HANDLERS={meant})"
            )
        if ":" in name:  # no module name holds one: `module:function`, as gunicorn takes
            meant = _replaced(names, name, name.split(":", 1)[0])
            raise ConfigError(
                f"SPOOL_HANDLERS: {name!r} names a function; name its module, whose "
                f"import registers every @handler in it (SPOOL_HANDLERS={meant})"
            )


def module_of(path: str) -> str:
    """The dotted module a relative file path names: ./pkg/jobs.py -> pkg.jobs."""
    stem = path.removesuffix(".py")
    parts = [p for p in re.split(r"[/\\]+", stem) if p not in ("", ".")]
    return ".".join(parts)


def _replaced(names: tuple[str, ...], old: str, new: str) -> str:
    return ",".join(new if n == old else n for n in names)

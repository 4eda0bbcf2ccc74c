"""SPOOL_HANDLERS naming a function (`myapp.jobs:charge_invoice`) says to name its module.

Found walking docs/handlers.md as a new user: the `module:function` form other
tools take (gunicorn, uvicorn, Celery's `-A`) was tried as an import and refused
with "No module named 'myapp.jobs:charge_invoice' ... imported from the working
directory or a directory on PYTHONPATH", which points at the path, not at the
value: the module was there. Now the line says SPOOL_HANDLERS names modules, and
gives the value meant, before anything is imported (as for a file path).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from chalicelib import handler_modules
from chalicelib.config import ConfigError
from tests.test_cli_errors import one_line, spool


@pytest.mark.parametrize(
    ("value", "meant"),
    [
        ("myjobs:charge", "other,myjobs"),
        ("pkg.myjobs:charge_invoice", "other,pkg.myjobs"),
    ],
)
def test_a_module_colon_function_entry_is_named_with_the_module_meant(
    tmp_path: Path, value: str, meant: str
) -> None:
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__init__.py").write_text("")
    for where in (tmp_path / "myjobs.py", tmp_path / "pkg" / "myjobs.py"):
        where.write_text("open('imported', 'w').close()\n")
    result = spool("worker", "--burst", cwd=tmp_path, SPOOL_HANDLERS=f"other,{value}")
    assert result.returncode == 2
    line = one_line(result)
    assert f"SPOOL_HANDLERS: {value!r} names a function" in line
    assert f"(SPOOL_HANDLERS={meant})" in line
    assert "PYTHONPATH" not in line  # the module is found; the value is what is wrong
    assert not (tmp_path / "imported").exists()  # checked before anything is imported


def test_the_check_names_the_module_of_a_function_entry() -> None:
    with pytest.raises(ConfigError, match=r"SPOOL_HANDLERS=a,b\.c\)"):
        handler_modules.check(("a", "b.c:f"))
    handler_modules.check(("a", "b.c"))  # module names pass

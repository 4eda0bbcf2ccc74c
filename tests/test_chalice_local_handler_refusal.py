"""`chalice local` refusing a SPOOL_HANDLERS module gives the module's fix once.

Its line was "spool: SPOOL_HANDLERS: importing 'jobs' failed (RuntimeError: boom).
Fix the module; see docs/handlers.md. Fix the variable and start again.": two fixes,
the second sending the user to a variable that is right. `spool` says the first
alone; chalice local now says what `spool` says.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from chalicelib.edge_settings import value_refusal
from chalicelib.settings_catalog import refusal_line

KEYS = {"SPOOL_API_KEYS": "local-key-0123456789=local", "SPOOL_STORE_URL": "memory://"}


def test_a_module_that_fails_to_import_is_refused_with_its_own_fix_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "boom_jobs_c.py").write_text("raise RuntimeError('boom at import')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    refusal = value_refusal({**KEYS, "SPOOL_HANDLERS": "boom_jobs_c"})
    assert refusal is not None
    assert refusal_line(*refusal) == (
        "spool: SPOOL_HANDLERS: importing 'boom_jobs_c' failed (RuntimeError: boom at "
        f"import) at {tmp_path / 'boom_jobs_c.py'}, line 1. Fix the module; see docs/handlers.md."
    )


def test_a_module_that_is_not_there_is_refused_with_its_own_fix_only() -> None:
    refusal = value_refusal({**KEYS, "SPOOL_HANDLERS": "no_such_jobs_module_c"})
    assert refusal is not None
    line = refusal_line(*refusal)
    assert line.startswith("spool: SPOOL_HANDLERS: cannot import 'no_such_jobs_module_c'")
    assert line.endswith("see docs/handlers.md.") and "Fix the variable" not in line


def test_a_malformed_value_keeps_the_variable_s_fix() -> None:
    refusal = value_refusal({**KEYS, "SPOOL_CACHE_TTL": "-1"})
    assert refusal is not None
    assert refusal_line(*refusal).endswith(". Fix the variable and start again.")

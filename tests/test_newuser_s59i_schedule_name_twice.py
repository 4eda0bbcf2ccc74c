"""Two @periodic schedules under one name: the first was dropped, silently.

SPOOL_SCHEDULES refuses a name given twice ("the last would have won, silently"),
but in code `@periodic("nightly", ...)` above two handlers registered both into one
ScheduleBook entry: `spool schedules` listed only the second (report_b at 03:00)
with exit 0, and report_a's schedule never fired. A name declared again for
another job type is now refused where it is written, naming both types; the same
type again (its module imported twice, or reloaded) still replaces itself.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from chalicelib import periodic
from chalicelib.handlers import Registry
from tests.procs import ROOT, guarded_env

HANDLERS = (
    "from chalicelib.handlers import handler\n"
    "from chalicelib.periodic import periodic\n\n\n"
    "@periodic('nightly', cron='0 2 * * *')\n"
    "@handler('report_a')\n"
    "def report_a(payload):\n"
    "    return {}\n\n\n"
    "@periodic('nightly', cron='0 3 * * *')\n"
    "@handler('report_b')\n"
    "def report_b(payload):\n"
    "    return {}\n"
)


def test_spool_schedules_refuses_one_name_for_two_handlers(tmp_path: Path) -> None:
    (tmp_path / "reports.py").write_text(HANDLERS)
    env = guarded_env(
        PYTHONPATH=str(ROOT),
        SPOOL_HANDLERS="reports",
        SPOOL_STORE_URL=f"sqlite:///{tmp_path / 'spool.db'}",
    )
    done = subprocess.run(
        [sys.executable, "-m", "local.cli", "schedules"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode != 0, done.stdout
    assert "'nightly'" in done.stderr
    assert "report_a" in done.stderr and "report_b" in done.stderr
    assert "Traceback" not in done.stderr


def test_the_same_type_again_replaces_itself() -> None:
    registry = Registry()

    @registry.handler("report")
    def report(payload: object) -> dict[str, object]:
        return {}

    book = periodic.ScheduleBook()
    book.periodic("nightly", cron="0 2 * * *", registry=registry)(report)
    book.periodic("nightly", cron="0 4 * * *", registry=registry)(report)  # reloaded, edited
    [schedule] = book.all()
    assert schedule.cron == "0 4 * * *"
    with pytest.raises(ValueError, match="'nightly' is declared twice"):
        book.periodic("nightly", cron="0 2 * * *", type="other")(report)

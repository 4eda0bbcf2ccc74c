"""`spool schedules` named only the first thing wrong with a schedule's payload.

Following docs/handlers.md ("Periodic jobs"), a schedule whose payload had a field
misnamed (`customer` for `customer_id`, under `extra="forbid"`) was refused with
"(customer_id: Field required)" alone: fixing that, the next run refused the extra
field. `spool enqueue` names both at once; the schedule check now does too.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.procs import ROOT, guarded_env

HANDLERS = (
    "from pydantic import BaseModel, ConfigDict\n"
    "from chalicelib.handlers import handler\n\n\n"
    "class Report(BaseModel):\n"
    "    model_config = ConfigDict(extra='forbid')\n"
    "    customer_id: str\n\n\n"
    "@handler('send_report', payload=Report)\n"
    "def send_report(payload: Report) -> dict:\n"
    "    return {}\n"
)


def test_spool_schedules_names_every_field_the_payload_gets_wrong(tmp_path: Path) -> None:
    (tmp_path / "reports.py").write_text(HANDLERS)
    schedule = {"name": "nightly", "type": "send_report", "cron": "0 2 * * *"}
    env = guarded_env(
        PYTHONPATH=str(ROOT),
        SPOOL_HANDLERS="reports",
        SPOOL_STORE_URL=f"sqlite:///{tmp_path / 'spool.db'}",
        SPOOL_SCHEDULES=json.dumps([{**schedule, "payload": {"customer": "acme"}}]),
    )
    done = subprocess.run(
        [sys.executable, "-m", "local.cli", "schedules"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert "customer_id: Field required" in done.stderr
    assert "customer: Extra inputs are not permitted" in done.stderr
    assert done.stderr.count("\n") == 1

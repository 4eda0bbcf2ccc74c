"""The SQS poller did not say which job types it loaded.

docs/handlers.md tells a user to read the start-up lines to see that their
SPOOL_HANDLERS module was picked up: `spool serve`'s `types` line, `spool worker`'s
first line. Following docs/aws.md offline, the poller (the worker function) said only
its queue, its schedule and the demo switch: a poller started in a shell without
SPOOL_HANDLERS ran the API's jobs into `dead` ("no handler ... in this worker") with
nothing at start to tell. It now prints the same `types` line as `spool serve`.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.moto_proc import moto_server
from tests.procs import ROOT, guarded_env


def test_the_poller_names_the_job_types_it_loaded(tmp_path: Path) -> None:
    (tmp_path / "reports.py").write_text(
        "from chalicelib.handlers import handler\n\n\n"
        "@handler('send_report')\n"
        "def send_report(payload: dict) -> dict:\n"
        "    return {}\n"
    )
    with moto_server(tmp_path / "moto.log") as moto:
        url = f"dynamodb://jobs?queue=jobs&bucket=jobs-bucket&endpoint={moto.endpoint}&create=1"
        env = guarded_env(
            PYTHONPATH=f"{tmp_path}:{ROOT}",
            SPOOL_STORE_URL=url,
            SPOOL_HANDLERS="reports",
            SPOOL_DEMO_HANDLERS="false",
        )
        done = subprocess.run(
            [sys.executable, "-m", "local.sqs_poller", "--max-seconds", "1", "--no-schedule"],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=90,
        )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "  types      4 loaded: http_request, resize_image, send_email, send_report\n" in (
        done.stdout
    ), done.stdout

"""`spool worker` starts without what only other commands use (progress bars): start-up
to the first job is part of every deploy and every autoscaled worker."""

from __future__ import annotations

import subprocess
import sys


def test_importing_the_cli_leaves_progress_bars_and_the_metrics_port_out() -> None:
    code = (
        "import sys, local.cli; "
        "print(sorted(m for m in ('tqdm', 'http.server', 'httpx', 'chalicelib.api.schemas') "
        "if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"

"""`spool worker` starts without what only other commands use (progress bars): start-up
to the first job is part of every deploy and every autoscaled worker."""

from __future__ import annotations

import os
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


def test_a_worker_nobody_scrapes_or_pushes_builds_no_metrics(tmp_path) -> None:
    code = (
        "import sys; from local.cli import main; rc = main(['worker', '--burst', '--quiet']); "
        "print(rc, 'prometheus_client' in sys.modules)"
    )
    env = {
        **os.environ,
        "SPOOL_STORE_URL": f"sqlite:///{tmp_path}/spool.db",
        "SPOOL_PUSHGATEWAY_URL": "",
    }
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env
    )
    assert out.stdout.split() == ["0", "False"], out.stderr

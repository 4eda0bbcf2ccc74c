"""`make run`, as README.md's first line has a newcomer type it: it serves, prints where
(the URL, the dashboard, a development key, the export line and a first enqueue), a
first job runs, and Ctrl-C (SIGINT to the terminal's whole foreground group: make and
the server) stops it cleanly, finishing what runs, with nothing left behind.

The environment step is not rerun here (`-o` the stamp; tests/test_make_venv.py covers
it), the venv is this interpreter's (`BIN=`), and the store is under tmp_path, so the
checkout is not written to.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from tests.procs import ROOT, guarded_env, read_banner

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")


def test_make_run_serves_says_where_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    env = guarded_env(SPOOL_STORE_URL=f"sqlite:///{tmp_path}/spool.db")
    for name in ("SPOOL_API_KEYS", "SPOOL_METRICS_KEYS", "SPOOL_DEMO_HANDLERS"):
        env.pop(name, None)
    bin_dir = Path(sys.executable).parent
    proc = subprocess.Popen(
        ["make", "--no-print-directory", "-o", ".venv/.installed-serve", "run", "PORT=0",
         f"BIN={bin_dir}"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,  # its own group: the SIGINT below is a terminal's Ctrl-C
    )  # fmt: skip
    try:
        banner = read_banner(proc)
        url = re.search(r"serving app\.py on (http://127\.0\.0\.1:\d+)\n", banner)
        key = re.search(r"dev API key \(tenant default\), made for this run: (dev-\S+)", banner)
        assert url and key, banner
        assert f"ui      {url[1]}/ui" in banner
        assert f"export SPOOL_URL={url[1]} SPOOL_API_KEY={key[1]}" in banner
        assert "spool enqueue echo --payload" in banner
        headers = {"X-API-Key": key[1]}
        made = requests.post(
            f"{url[1]}/enqueue", json={"type": "echo"}, headers=headers, timeout=30
        )
        assert made.status_code == 201, made.text
        done = requests.get(f"{url[1]}/status/{made.json()['id']}?wait=20", headers=headers,
                            timeout=30)  # fmt: skip
        assert done.json()["state"] == "succeeded"
        os.killpg(proc.pid, signal.SIGINT)
        assert proc.stdout is not None
        rest = proc.stdout.read()
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert rest.rstrip().endswith("spool: stopped"), rest
    assert "Traceback" not in rest
    with pytest.raises(ProcessLookupError):  # make and the server both gone
        os.killpg(proc.pid, 0)


@pytest.mark.parametrize("port", ["abc", "99999", "-1"])
def test_make_run_with_a_port_it_cannot_use_names_port(tmp_path: Path, port: str) -> None:
    """`PORT=abc make run` said "argument --port: must be 0-65535", an option the user
    never typed: the refusal names PORT too, as the port-in-use one does."""
    env = guarded_env(SPOOL_STORE_URL=f"sqlite:///{tmp_path}/spool.db", PORT=port)
    bin_dir = Path(sys.executable).parent
    ran = subprocess.run(
        ["make", "--no-print-directory", "-o", ".venv/.installed-serve", "run",
         f"BIN={bin_dir}"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert ran.returncode != 0
    assert (
        f"must be 0-65535 (0 picks a free one; under make run: PORT=N make run), not {port!r}"
        in ran.stderr
    )
    assert "Traceback" not in ran.stderr

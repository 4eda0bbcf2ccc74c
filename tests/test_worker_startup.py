"""`spool worker` starts without what only other commands use (progress bars): start-up
to the first job is part of every deploy and every autoscaled worker."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest


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


@pytest.mark.parametrize(
    "command", [["worker", "--concurrency", "2"], ["serve", "--port", "0"]], ids=lambda c: c[0]
)
def test_a_command_whose_output_pipe_is_closed_as_it_starts_still_runs_jobs(
    tmp_path, command: list[str]
) -> None:
    """`spool worker`'s and `spool serve`'s banner hit a closed pipe (a log shipper
    gone), main() took the BrokenPipeError for `spool jobs | head` and the command
    exited 0 at once, running nothing (serve's own worker included)."""
    import time

    from chalicelib.models import JobQuery, JobState
    from chalicelib.storage import open_store
    from tests.procs import ROOT, guarded_env, stop

    url = f"sqlite:///{tmp_path}/spool.db"
    env = guarded_env(
        SPOOL_STORE_URL=url, SPOOL_DEMO_HANDLERS="true", SPOOL_API_KEYS="k-0123456789abcdef=t"
    )
    added = subprocess.run(
        [sys.executable, "-m", "local.cli", "enqueue", "echo", "--count", "3"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert added.returncode == 0, added.stderr
    read_end, write_end = os.pipe()
    os.close(read_end)  # nobody will ever read what the worker writes
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "local.cli", *command],
            cwd=ROOT,
            env=env,
            stdout=write_end,
            stderr=write_end,
        )
    finally:
        os.close(write_end)
    store = open_store(url)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            states = [job.state for job in store.list_jobs(JobQuery()).jobs]
            if states.count(JobState.SUCCEEDED) == 3 or proc.poll() is not None:
                break
            time.sleep(0.1)
        assert proc.poll() is None, f"spool {command[0]} exited ({proc.returncode})"
        assert states.count(JobState.SUCCEEDED) == 3, states
    finally:
        stop(proc)
        store.close()


# `spool serve` under runpy, saying at exit which of chalice's command-line modules it
# loaded (atexit runs after serve's graceful stop, so the whole run counts).
SERVE_SAYING_ITS_MODULES = """
import atexit, runpy, sys
heavy = ("chalice.cli", "chalice.test", "inquirer", "blessed")
atexit.register(lambda: print("loaded:", sorted(m for m in heavy if m in sys.modules),
                              file=sys.stderr, flush=True))
sys.argv = ["spool", "serve", "--port", "0"]
runpy.run_module("local.cli", run_name="__main__", alter_sys=True)
"""


def test_spool_serve_runs_a_job_without_loading_chalices_command_line(tmp_path) -> None:
    """The built-in worker built its scheduled event with chalice.test's generator,
    and chalice.test imports chalice's command line (chalice.cli: inquirer, blessed,
    yaml, the deployer): about 0.2 s of every `spool serve` start, for one dict. The
    run here serves a job through the built-in worker, end to end, and loads none
    of it (local/emulator.py builds the event itself)."""
    import json
    import re
    import urllib.request

    from tests.procs import ROOT, guarded_env, read_banner, stop

    env = guarded_env(
        SPOOL_STORE_URL=f"sqlite:///{tmp_path}/spool.db",
        SPOOL_DEMO_HANDLERS="true",
        SPOOL_API_KEYS="k-0123456789abcdef=t",
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", SERVE_SAYING_ITS_MODULES],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        found = re.search(r"serving app\.py on (http://127\.0\.0\.1:\d+)", read_banner(proc))
        assert found is not None, "spool serve did not start"
        url, key = found.group(1), {"X-API-Key": "k-0123456789abcdef"}
        enqueue = urllib.request.Request(
            url + "/enqueue",
            data=b'{"type": "echo", "payload": {"n": 1}}',
            headers={**key, "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(enqueue, timeout=30) as answer:
            job_id = json.load(answer)["id"]
        state = ""
        for _ in range(12):  # each asks the server to hold the answer up to 5 s
            status = urllib.request.Request(f"{url}/status/{job_id}?wait=5", headers=key)
            with urllib.request.urlopen(status, timeout=30) as answer:
                state = json.load(answer)["state"]
            if state == "succeeded":
                break
        assert state == "succeeded"
    finally:
        stop(proc)
    _, errors = proc.communicate(timeout=30)
    assert "loaded: []" in errors, errors

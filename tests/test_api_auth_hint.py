"""A fresh `chalice local --stage local` has no API keys: its 401 says how to set one."""

from __future__ import annotations

import time
from pathlib import Path

import requests

from tests.procs import guarded_env, stop
from tests.test_chalice_local import free_port, start_chalice_local


def test_chalice_local_without_keys_tells_the_developer_what_to_set(tmp_path: Path) -> None:
    env = guarded_env()
    env.pop("SPOOL_API_KEYS", None)  # the stage's config.json sets none: the first-run case
    port = free_port()
    proc = start_chalice_local(tmp_path, port, env)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        reply = None
        while reply is None and time.monotonic() < deadline and proc.poll() is None:
            try:
                reply = requests.get(f"{base}/jobs", headers={"X-API-Key": "guess"}, timeout=5)
            except requests.ConnectionError:
                time.sleep(0.2)
        assert reply is not None, proc.stderr.read().decode() if proc.stderr else ""
        assert reply.status_code == 401
        message = reply.json()["error"]["message"]
        for hint in ("SPOOL_API_KEYS", "key=tenant", ".chalice/config.json", "spool serve"):
            assert hint in message
        missing = requests.post(f"{base}/enqueue", json={"type": "echo"}, timeout=10)
        assert missing.status_code == 401 and "SPOOL_API_KEYS" in missing.json()["error"]["message"]
    finally:
        stop(proc, 10)

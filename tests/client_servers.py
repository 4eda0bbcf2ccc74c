"""`spool serve` children for the client and remote CLI tests.

Their log lines go to a file, not to a pipe nobody reads (a full pipe would
block the server mid-test); a test that fails can print the file.
"""

from __future__ import annotations

import os
from pathlib import Path

from tests.apikit import API_KEYS
from tests.procs import Served, guarded_env, spool_serve


def serve(store_url: str, log: Path, *args: str, **env: str) -> Served:
    """Start `spool serve ARGS` on a free port with the test tenants' keys."""
    child = guarded_env(
        SPOOL_STORE_URL=store_url,
        SPOOL_API_KEYS=API_KEYS,
        SPOOL_DEMO_HANDLERS="true",
        **env,
    )
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        return spool_serve("--threads", "8", *args, env=child, stderr=fd)
    finally:
        os.close(fd)  # the child has its own copy


def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1])

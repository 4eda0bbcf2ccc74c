"""A private PgBouncer in front of the test server (tests/pg_support.py's BASE_URL).

Debian's pgbouncer (1.18 in CI, installed by .ci/run) on a free loopback port, with
its config, auth file, log and pid file in a temp dir, pooling the test database in
the pool mode a test asks for. A missing binary skips saying why, and fails in CI
(pg_support.unavailable). PgBouncer refuses to run as root, so as root it runs as
the `postgres` user the server's package creates (as tests/pg_private.py does).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

from tests.pg_support import BASE_URL, unavailable, with_port

PGBOUNCER = os.environ.get("SPOOL_TEST_PGBOUNCER", "/usr/sbin/pgbouncer")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _runs_as() -> str | None:
    """None (this user) unless this is root, which PgBouncer refuses."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        unavailable("running as root, and there is no `postgres` user to run PgBouncer as")
    return "postgres"


def _config(port: int, mode: str, ignore: str, root: Path, extra: str = "") -> str:
    server = urlsplit(BASE_URL)
    dbname = server.path.lstrip("/") or "postgres"
    return (
        "[databases]\n"
        f"{dbname} = host={server.hostname or '127.0.0.1'} port={server.port or 5432}"
        f" dbname={dbname}\n"
        "[pgbouncer]\n"
        f"listen_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n"
        f"auth_type = trust\nauth_file = {root / 'users.txt'}\n"
        f"pool_mode = {mode}\n"
        f"logfile = {root / 'pgbouncer.log'}\npidfile = {root / 'pgbouncer.pid'}\n"
        + (f"ignore_startup_parameters = {ignore}\n" if ignore else "")
        + extra
    )


@contextlib.contextmanager
def pgbouncer(mode: str = "session", ignore: str = "options", extra: str = "") -> Iterator[str]:
    """Yield BASE_URL through a fresh PgBouncer in `mode` (session, transaction or
    statement) that ignores the startup parameters `ignore` names, with `extra` lines
    of its [pgbouncer] section (`max_client_conn = 2\n`); stop it after."""
    if not os.path.exists(PGBOUNCER):
        unavailable(f"{PGBOUNCER} is missing (Debian package pgbouncer)")
    user = _runs_as()
    root = Path(tempfile.mkdtemp(prefix="spool-pgbouncer-"))
    proc: subprocess.Popen[bytes] | None = None
    try:
        port = _free_port()
        role = urlsplit(BASE_URL).username or "postgres"
        (root / "users.txt").write_text(f'"{role}" ""\n')
        (root / "pgbouncer.ini").write_text(_config(port, mode, ignore, root, extra))
        if user is not None:
            for path in (root, *root.iterdir()):
                shutil.chown(path, user, user)
        args = [PGBOUNCER, str(root / "pgbouncer.ini")]
        if user is not None:
            args[1:1] = ["-u", user]
        proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 10
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
                break
            if proc.poll() is not None or time.monotonic() > deadline:
                log = (
                    (root / "pgbouncer.log").read_text()
                    if (root / "pgbouncer.log").exists()
                    else ""
                )
                err = proc.stderr.read().decode() if proc.stderr and proc.poll() is not None else ""
                raise AssertionError(f"pgbouncer did not start: {err} {log}")
            time.sleep(0.02)
        yield with_port(BASE_URL, port)
    finally:
        if proc is not None:
            proc.send_signal(signal.SIGINT)  # SIGINT: stop now, do not wait for clients
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        shutil.rmtree(root, ignore_errors=True)

"""A Postgres server of the test's own, for the test that restarts Postgres.

The shared server on 127.0.0.1:5432 serves every other Postgres test, and with
the suite on parallel workers (docs/testing.md) some of them run while the
restart test does: restarting that server cut their sessions mid-test. So the
restart test starts a server of its own (initdb in a fresh folder, a free port,
trust auth, no Unix socket outside that folder) and restarts that one.

It needs the server binaries (initdb, pg_ctl, postgres; Debian's `postgresql`
package puts them in /usr/lib/postgresql/VERSION/bin). initdb refuses to run as
root, so as root the server runs as the `postgres` user that package creates.
A missing binary or user skips saying why, and fails in CI (tests/pg_support.py).
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.pg_support import unavailable
from tests.redis_support import free_port

TOOLS = ("initdb", "pg_ctl", "postgres")
DEBIAN_BINDIRS = "/usr/lib/postgresql/*/bin"
STARTUP_SECONDS = 60
PORT_TRIES = 5


def _version(bindir: str) -> tuple[int, ...]:
    """/usr/lib/postgresql/15/bin -> (15,): the newest Debian version first."""
    name = Path(bindir).parent.name
    return tuple(int(p) for p in name.split(".") if p.isdigit()) or (0,)


def find_bindir(path: str | None = None, debian_glob: str = DEBIAN_BINDIRS) -> Path:
    """The folder holding initdb, pg_ctl and postgres: initdb's on PATH (through any
    symlink), else the newest of Debian's. Skip (fail in CI) when there is none."""
    candidates: list[str] = []
    on_path = shutil.which("initdb", path=path)
    if on_path:
        candidates.append(str(Path(on_path).resolve().parent))
    candidates += sorted(glob.glob(debian_glob), key=_version, reverse=True)
    for bindir in candidates:
        if all(os.access(Path(bindir) / tool, os.X_OK) for tool in TOOLS):
            return Path(bindir)
    unavailable(
        "a private Postgres server needs initdb, pg_ctl and postgres (Debian package "
        f"postgresql), and none was found on PATH or in {debian_glob}"
    )


def server_user() -> str | None:
    """Who runs the server: None (this user) unless this is root, which initdb refuses."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        unavailable("running as root, and there is no `postgres` user to run a private server")
    return "postgres"


@dataclass
class PrivateServer:
    """One initdb'd cluster in `root` (owned by `user`), on 127.0.0.1:`port`."""

    bindir: Path
    root: Path
    user: str | None
    port: int = 0

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def log(self) -> Path:
        return self.root / "server.log"

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            args, user=self.user, capture_output=True, text=True, check=False, cwd=self.root
        )

    def init(self) -> None:
        done = self._run(
            str(self.bindir / "initdb"), "-D", str(self.data), "-U", "postgres",
            "--auth=trust", "--encoding=UTF8", "--no-sync",
        )  # fmt: skip
        assert done.returncode == 0, f"initdb failed: {done.stdout}{done.stderr}"

    def start(self) -> None:
        """Start on a free port; another process may take the port between the probe
        and the server's bind, so a refused bind tries a new port (a few times)."""
        for _ in range(PORT_TRIES):
            self.port = free_port()
            if self._pg_ctl_start():
                return
            if "could not bind" not in self.log.read_text(errors="replace"):
                break
        raise AssertionError(f"the private Postgres did not start: {self.tail()}")

    def _pg_ctl_start(self) -> bool:
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1"
            f" -c unix_socket_directories={self.root} -c max_connections=100"
        )
        done = self._run(
            str(self.bindir / "pg_ctl"), "-D", str(self.data), "-l", str(self.log),
            "-w", "-t", str(STARTUP_SECONDS), "-o", options, "start",
        )  # fmt: skip
        return done.returncode == 0

    def restart_immediate(self) -> subprocess.CompletedProcess[str]:
        """`-m immediate`: every backend killed, crash recovery on the way up; the same
        port and options (pg_ctl keeps them in postmaster.opts). The server's output
        goes to the log (`-l`): left on pg_ctl's stdout, the pipe would never close."""
        return self._run(
            str(self.bindir / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-w",
            "-t", str(STARTUP_SECONDS), "-m", "immediate", "restart",
        )  # fmt: skip

    def ensure_running(self) -> None:
        """Start it again on its own port if it is down (a failed restart)."""
        status = self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "status")
        if status.returncode != 0:
            self._pg_ctl_start()

    def stop(self) -> None:
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop")

    def tail(self) -> str:
        try:
            return self.log.read_text(errors="replace")[-2000:]
        except OSError:
            return "(no server log)"


@contextlib.contextmanager
def private_server() -> Iterator[PrivateServer]:
    """A running private server, stopped and deleted afterwards.

    Its folder is a fresh one under the system's temporary folder, not the test's
    tmp_path: pytest makes that 0700 for root, which the `postgres` user cannot enter."""
    bindir = find_bindir()
    user = server_user()
    root = Path(tempfile.mkdtemp(prefix="spool-pg-private-"))
    try:
        if user is not None:
            shutil.chown(root, user, user)
        server = PrivateServer(bindir, root, user)
        server.init()
        server.start()
        try:
            yield server
        finally:
            server.stop()
    finally:
        shutil.rmtree(root, ignore_errors=True)

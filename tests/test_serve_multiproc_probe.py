"""`spool serve` (and `--processes N`) as an outside tester starts it: numbers out
of range refused as usage errors, a port already served refused even when its
listener shares ports (SO_REUSEPORT), and a store outage that must not make the
supervisor give up on its server processes."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from local import multiproc
from local.multiproc import Supervisor, listening_sockets, reuse_port_available
from tests.procs import guarded_env

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="--processes needs POSIX")


def serve(*args: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "local.cli", "serve", *args],
        cwd=ROOT,
        env=guarded_env(SPOOL_STORE_URL=f"sqlite:///{tmp_path}/spool.db"),
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("args", "says"),
    [
        # 99999 was bound as 99999 - 65536 = 34463: served, on a port nobody asked for.
        (["--port", "99999"], "--port: must be 0-65535"),
        (["--port", "-1"], "--port: must be 0-65535"),
        (["--processes", "2", "--port", "70000"], "--port: must be 0-65535"),
        # No threads: the server accepted connections and never answered one.
        (["--threads", "-3"], "--threads: must be 1-1024"),
        (["--threads", "0"], "--threads: must be 1-1024"),
        # Too many: "unexpected error: RuntimeError: can't start new thread".
        (["--threads", "100000"], "--threads: must be 1-1024"),
        (["--processes", "2", "--threads", "x"], "--threads: must be 1-1024"),
        # argparse's own "invalid int value: 'abc'", unlike every other number here.
        (["--processes", "abc"], "--processes: must be between 1 and 64"),
        (["--processes", "1.5"], "--processes: must be between 1 and 64"),
    ],
)
def test_numbers_out_of_range_are_usage_errors(args: list[str], says: str, tmp_path: Path) -> None:
    out = serve(*args, tmp_path=tmp_path)
    assert out.returncode == 2, (out.stdout, out.stderr)
    assert says in out.stderr
    assert "unexpected error" not in out.stderr and "Traceback" not in out.stderr


@pytest.fixture
def shared_listener() -> socket.socket:
    """Another program of this user, listening with SO_REUSEPORT (as a running
    `spool serve --processes N` does)."""
    if not reuse_port_available():
        pytest.skip("SO_REUSEPORT balancing is Linux's")
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    return sock


def test_a_port_served_with_reuseport_is_not_joined(shared_listener: socket.socket) -> None:
    """The sockets joined it: a second `spool serve --processes N` on the port of a
    running one started, and the kernel split the connections between the two."""
    port = shared_listener.getsockname()[1]
    try:
        with pytest.raises(OSError):
            listening_sockets("127.0.0.1", port, 2)
    finally:
        shared_listener.close()


def test_serving_a_port_already_served_fails_the_start(
    shared_listener: socket.socket, tmp_path: Path
) -> None:
    port = shared_listener.getsockname()[1]
    try:
        out = serve("--processes", "2", "--port", str(port), tmp_path=tmp_path)
    finally:
        shared_listener.close()
    assert out.returncode == 1, (out.stdout, out.stderr)
    assert f"cannot listen on 127.0.0.1:{port}" in out.stderr
    assert "serving app.py" not in out.stdout


def test_processes_that_cannot_start_while_the_store_is_down_are_not_given_up(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A server process opens the store first, so while the store is down a restarted
    one exits at once; after 3 such exits the supervisor stopped the whole server
    (the other processes were answering 503s and would have recovered). Now those
    exits do not count; once the store answers again, counting resumes."""
    monkeypatch.setattr(multiproc, "STORE_DOWN_PAUSE", 0.05)
    monkeypatch.setattr(multiproc, "RESTART_PAUSE", 0.05)
    made = listening_sockets("127.0.0.1", 0, 1)
    fails = [sys.executable, "-c", "import sys; sys.exit(1)"]
    down = threading.Event()
    down.set()
    restarts = 0

    def store_down() -> bool:
        nonlocal restarts
        restarts += 1
        if restarts > 3 * multiproc.QUICK_EXITS_ALLOWED:
            down.clear()  # the store is back: a process that still exits is broken
        return down.is_set()

    sup = Supervisor(made, 2, guarded_env(), command=fails, store_down=store_down)
    for child in sup.children:
        sup.spawn(child)
    reasons: list[str] = []
    assert sup.watch(on_give_up=reasons.append) == 1
    assert restarts > 3 * multiproc.QUICK_EXITS_ALLOWED  # rode out the outage first
    assert reasons and "keeps exiting (code 1)" in reasons[0]

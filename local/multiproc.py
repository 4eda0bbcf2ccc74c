"""`spool serve --processes N`: N server processes sharing one port.

One Python process is one GIL: waitress's threads take turns, so a single
`spool serve` tops out at what one core can parse, route and answer. Here a
supervisor (this module, the process the user started) opens the listening
sockets, starts N copies of the ordinary single-process server on them
(`spool serve --no-worker`, the same waitress with the same guards and limits,
so every route, limit and error shape is the one `make run` serves), and runs
the emulated worker itself, once.

The sockets: on Linux, one socket per process, each bound to the same port with
SO_REUSEPORT, so the kernel spreads new connections across the processes;
elsewhere one socket shared by all (whichever process is free accepts). The
supervisor keeps them open, so a server process that crashes is restarted on
its own socket and the connections waiting in its backlog are served, not
reset. One that cannot start (the store down) would leave them waiting for as
long as that lasts: the supervisor answers them 503 itself meanwhile.

Stopping: SIGTERM or Ctrl-C stops the server processes (each finishes its
running requests, as the single server does), then the emulated worker; every
server process also stops by itself when the supervisor is gone, so none is
left behind even after a SIGKILL.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from chalicelib import logs
from chalicelib.config import Settings
from local.cli_errors import CliFailure

log = logging.getLogger("spool.serve")

MAX_PROCESSES = 64
READY_TIMEOUT = 60.0  # a server process's start-up: imports, the store, its socket
STOP_GRACE = 15.0  # running requests get 5 s (local/server.py); then SIGKILL
# A process that exits sooner than this after starting failed to start; this many
# such exits in a row mean it never will (a broken store, a broken handler module).
QUICK_EXIT = 5.0
QUICK_EXITS_ALLOWED = 3
RESTART_PAUSE = 0.5
STORE_DOWN_PAUSE = 2.0  # between restarts of a process while the store is down
PARENT_CHECK = 0.5  # how often a server process looks for its supervisor (and beats)
HANG_SETTING = "SPOOL_SERVE_HANG_SECONDS"
DEFAULT_HANG_SECONDS = 20.0


def hang_seconds(settings: Settings) -> float:
    """How long a server process may go without turning its loop before it is replaced."""
    return settings.number(HANG_SETTING, DEFAULT_HANG_SECONDS, minimum=1.0, maximum=3600.0)


def reuse_port_available() -> bool:
    """Linux balances SO_REUSEPORT listeners; elsewhere it does not (or is absent)."""
    return sys.platform.startswith("linux") and hasattr(socket, "SO_REUSEPORT")


def listening_sockets(host: str, port: int, count: int, backlog: int = 1024) -> list[socket.socket]:
    """`count` listening sockets on host:port (port 0: one free port for all).

    With SO_REUSEPORT each process gets its own; otherwise they share one.
    Raises OSError (the port is taken, the address is not ours...).
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    shared = not reuse_port_available()
    if not shared:
        port = free_port_of(family, host, port)
    made: list[socket.socket] = []
    try:
        for _ in range(1 if shared else count):
            sock = socket.socket(family, socket.SOCK_STREAM)
            made.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if not shared:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind((host, port))
            port = sock.getsockname()[1]  # port 0: the rest join the port it got
            sock.listen(backlog)
            sock.set_inheritable(True)
    except OSError:
        for sock in made:
            sock.close()
        raise
    return made * count if shared else made


def free_port_of(family: int, host: str, port: int) -> int:
    """`port` if nothing listens on it (0: a free one), else OSError (in use).

    SO_REUSEPORT lets a socket join any listener of the same user that set it too:
    a second `spool serve --processes N` on the port of a running one would share
    its connections (a different dev key, another version) instead of failing. A
    plain bind first asks the kernel whether the port is free, as the
    single-process server does.
    """
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind((host, port))
        return int(probe.getsockname()[1])


@dataclass
class Child:
    """One server process and the socket it serves."""

    index: int
    sock: socket.socket
    proc: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    quick_exits: int = 0
    beats: int = -1  # the read end of its heartbeat pipe
    heard: float = 0.0  # when it last beat, or was started (time.monotonic())
    beating: bool = False  # it has beaten since it was started
    # Why the system refused to start it again (EMFILE, EAGAIN, ENOMEM), None when it
    # started: `proc` is then still the one that exited, reaped already.
    refused: OSError | None = None
    # Its process exited before it served (its first beat): it cannot be started, and
    # the supervisor answers its socket until a replacement beats (_answer_for_the_down).
    # A process that served and crashed is not: its replacement serves the connections
    # waiting on its socket a moment later. Set on watch()'s thread.
    down: bool = False


@dataclass
class Supervisor:
    """Starts, watches, restarts and stops the server processes."""

    sockets: list[socket.socket]
    threads: int
    env: dict[str, str]
    command: list[str] = field(default_factory=lambda: [sys.executable, "-m", "local.cli"])
    # True while the store does not answer: a server process cannot start then (it
    # opens the store first), which says nothing of the process itself.
    store_down: Callable[[], bool] = lambda: False
    # A process silent this long (no heartbeat: hung, or stopped) is killed, then
    # restarted as any that exits: it still held its share of new connections.
    hang_seconds: float = DEFAULT_HANG_SECONDS
    extra_args: list[str] = field(default_factory=list)  # for every server process
    # Called with the pid of a server process that exited (reaped), before its
    # replacement starts: SharedMetrics.retire folds its cache counts.
    reaped: Callable[[int], None] = lambda pid: None
    # The folder the command was started in, where every server process starts: the
    # emulated worker runs handlers in this process, and a handler's os.chdir moved a
    # replacement started after it, whose relative store URL (the default
    # sqlite:///.spool/spool.db) then named a new, empty store in the handler's folder.
    cwd: str = field(default_factory=os.getcwd)
    children: list[Child] = field(init=False)
    _stopping: threading.Event = field(default_factory=threading.Event)
    _stand_in: threading.Thread | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        self.children = [Child(i, sock) for i, sock in enumerate(self.sockets)]

    def spawn(self, child: Child, ready_fd: int | None = None) -> None:
        fd = child.sock.fileno()
        args = [
            *self.command,
            "serve",
            "--no-worker",
            "--threads",
            str(self.threads),
            "--listen-fd",
            str(fd),
            "--supervisor-pid",
            str(os.getpid()),
            *self.extra_args,
        ]
        beats, beat_end = os.pipe()
        os.set_blocking(beats, False)
        os.set_blocking(beat_end, False)  # a full pipe drops a beat, never blocks the child
        args += ["--heartbeat-fd", str(beat_end)]
        fds = [fd, beat_end]
        if ready_fd is not None:
            args += ["--ready-fd", str(ready_fd)]
            fds.append(ready_fd)
        try:
            # Its own session: a terminal's Ctrl-C reaches the supervisor alone, which
            # then stops every server process in order (stop()).
            child.proc = subprocess.Popen(
                args, env=self.env, cwd=self._start_folder(), pass_fds=fds, start_new_session=True
            )
        except BaseException:
            os.close(beats)
            raise
        finally:
            os.close(beat_end)
        if child.beats >= 0:
            os.close(child.beats)
        child.beats = beats
        child.started = child.heard = time.monotonic()
        child.beating = False

    def _start_folder(self) -> str | None:
        """`cwd`, or None (this process's own) once it is gone: Popen would refuse to
        start anything there, and a server on an absolute store URL still starts."""
        return self.cwd if os.path.isdir(self.cwd) else None

    def start(self) -> None:
        """Start every process; return once each is serving (else stop all, raise)."""
        read_end, write_end = os.pipe()
        try:
            for child in self.children:
                self.spawn(child, write_end)
            os.close(write_end)
            write_end = -1
            self._wait_ready(read_end)
        except BaseException:
            self.stop()
            raise
        finally:
            os.close(read_end)
            if write_end >= 0:
                os.close(write_end)

    def _wait_ready(self, read_end: int) -> None:
        """Until every process says it serves, or a stop is asked (stop_requested):
        the stop waited for the start, up to READY_TIMEOUT with slow handler imports."""
        waiting = len(self.children)
        deadline = time.monotonic() + READY_TIMEOUT
        while waiting > 0 and not self._stopping.is_set():
            for child in self.children:
                if child.proc is not None and child.proc.poll() is not None:
                    raise CliFailure(
                        f"a server process exited at start (code {child.proc.returncode})",
                        "Read the lines above for its reason",
                    )
            left = deadline - time.monotonic()
            if left <= 0:
                raise CliFailure(
                    f"server processes did not start within {READY_TIMEOUT:g} s",
                    "Check the store is reachable, or start with fewer --processes",
                )
            readable, _, _ = select.select([read_end], [], [], min(left, 0.2))
            if readable:
                data = os.read(read_end, 64)
                if not data:  # every write end closed: all exited
                    continue
                waiting -= len(data)

    def watch(self, on_give_up: Callable[[str], None] | None = None) -> int:
        """Until stop(): restart any process that exits; 1 if one keeps failing."""
        if self._stand_in is None:
            self._stand_in = logs.outside_thread(self._answer_for_the_down, name="spool-stand-in")
            self._stand_in.start()
        while not self._stopping.wait(0.2):
            self._kill_the_silent()
            for child in self.children:
                proc = child.proc
                if proc is None or proc.poll() is None:
                    continue
                refused, child.refused = child.refused, None
                if refused is None and not child.beating:
                    child.down = True  # it could not start: _answer_for_the_down answers for it
                if refused is None:  # else reaped already, before the start it refused
                    self.reaped(proc.pid)
                lived = time.monotonic() - child.started
                # A process cannot start while the store does not answer (it opens the
                # store first): that says nothing of the process, so it is restarted
                # without counting. Giving up here stopped the whole server over a
                # store outage the other processes rode out with 503s.
                down = refused is None and lived < QUICK_EXIT and self.store_down()
                if lived >= QUICK_EXIT:
                    child.quick_exits = 0
                elif not down:
                    child.quick_exits += 1
                if child.quick_exits > QUICK_EXITS_ALLOWED:
                    why = (
                        f"cannot be started again ({refused})"
                        if refused is not None
                        else f"keeps exiting (code {proc.returncode})"
                    )
                    message = f"server process {child.index} {why}; stopping"
                    log.error("%s", message)
                    if on_give_up is not None:
                        on_give_up(message)
                    self.stop()
                    return 1
                if refused is None:
                    log.warning(
                        "server process %d (pid %d) exited with code %d; restarting it%s",
                        child.index,
                        proc.pid,
                        proc.returncode,
                        " (the store does not answer: trying again)" if down else "",
                    )
                pause = STORE_DOWN_PAUSE if down else RESTART_PAUSE * max(1, child.quick_exits)
                if self._stopping.wait(pause):
                    break
                self._start_again(child)
        return 0

    def _start_again(self, child: Child) -> None:
        """spawn(child); a start the system refuses now (out of descriptors, processes
        or memory) is said and tried again by watch() as a quick exit, so a lasting
        refusal ends in its give-up line. It raised out of watch(): the whole server,
        the healthy processes and the worker too, stopped at the first refusal with
        "unexpected error: OSError"."""
        try:
            self.spawn(child)
        except OSError as exc:
            child.refused = exc
            child.started = time.monotonic()
            log.warning(
                "server process %d cannot be started again (%s); trying again", child.index, exc
            )

    def _kill_the_silent(self) -> None:
        """Read the heartbeats; kill a running process silent for hang_seconds (watch()
        then restarts it, as one that exited). Until its first beat it is starting
        (imports, the store, handler modules): it is given READY_TIMEOUT for that, or
        a slow start would be killed, restarted and killed again."""
        now = time.monotonic()
        for child in self.children:
            if child.beats < 0:
                continue
            with contextlib.suppress(BlockingIOError):
                if os.read(child.beats, 4096):
                    child.heard, child.beating = now, True
                    child.down = False  # it serves its socket again
            proc = child.proc
            allowed = self.hang_seconds if child.beating else max(self.hang_seconds, READY_TIMEOUT)
            silent = now - child.heard
            if proc is None or proc.poll() is not None or silent < allowed:
                continue
            log.error(
                "server process %d (pid %d) has not turned its loop for %.0f s (hung or "
                "stopped); killing it to start it again",
                child.index,
                proc.pid,
                silent,
            )
            with contextlib.suppress(ProcessLookupError):
                proc.kill()  # SIGKILL: a stopped process takes it too
            proc.wait(5)
            child.heard = now

    def request_stop(self) -> None:
        """From a signal handler: watch() returns and the caller calls stop()."""
        self._stopping.set()

    @property
    def stop_requested(self) -> bool:
        return self._stopping.is_set()

    def stop(self, grace: float = STOP_GRACE) -> None:
        """SIGTERM every process, wait for them (SIGKILL past `grace`), close sockets."""
        self._stopping.set()
        running = [c.proc for c in self.children if c.proc is not None and c.proc.poll() is None]
        for proc in running:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace
        for proc in running:
            try:
                proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("server process %d did not stop in %g s; killing it", proc.pid, grace)
                proc.kill()
                proc.wait(5)
        if self._stand_in is not None:
            self._stand_in.join(STAND_IN_READ + STAND_IN_DRAIN + 1.0)
        for sock in {id(s): s for s in self.sockets}.values():
            sock.close()
        for child in self.children:
            if child.beats >= 0:
                os.close(child.beats)
                child.beats = -1

    @property
    def pids(self) -> list[int]:
        return [c.proc.pid for c in self.children if c.proc is not None]

    def _answer_for_the_down(self) -> None:
        """Answer 503 on a socket whose processes are all down, until one serves again:
        the socket of a down process (SO_REUSEPORT), or the shared one when all are down.

        The kernel gives each SO_REUSEPORT socket its share of new connections whether
        or not anyone accepts on it. The supervisor keeps a dead process's socket open
        so its restart finds the connections waiting there; but a process that cannot
        start (the store down, the SQLite file moved) left them waiting until the
        client's own timeout while the other processes answered at once. Closing the
        socket instead would reset the connections queued on it (a client could not
        tell whether its POST was applied) and give the port up when all are down."""
        while not self._stopping.is_set():
            served = {id(c.sock) for c in self.children if not c.down}
            down = list(
                {id(c.sock): c.sock for c in self.children if id(c.sock) not in served}.values()
            )
            if not down:
                self._stopping.wait(0.1)
                continue
            with contextlib.suppress(OSError, ValueError):  # a socket closed by stop()
                readable, _, _ = select.select(down, [], [], 0.1)
                for sock in readable:
                    answer_unavailable(sock)


STAND_IN_READ = 1.0  # for a request's head, on a connection the supervisor answers
STAND_IN_DRAIN = 0.5  # for the client to read the answer and close, before we do
UNAVAILABLE = (
    "the server process this connection reached could not start (the store did not "
    "answer it) and is being started again; nothing was done: retry shortly"
)


def answer_unavailable(listening: socket.socket) -> None:
    """Accept one connection (if a starting process did not take it) and answer 503.

    The request's head is read first, and the client's rest after the answer: closing
    with its bytes unread would reset the connection and could lose the answer."""
    listening.setblocking(False)
    try:
        conn, _ = listening.accept()
    except (BlockingIOError, InterruptedError):
        return  # the starting process accepted it
    from chalicelib.api.errors import error_body
    from chalicelib.api.http import API_HEADERS, dumps

    body = dumps(error_body("store_unavailable", UNAVAILABLE)).encode()
    # The headers every API answer carries, as the 503 of a process that serves.
    common = "".join(f"{name}: {value}\r\n" for name, value in API_HEADERS.items())
    head = (
        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
        f"{common}Retry-After: {int(STORE_DOWN_PAUSE)}\r\nContent-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    ).encode("latin-1")
    with conn, contextlib.suppress(OSError):
        received = b""
        deadline = time.monotonic() + STAND_IN_READ  # a slow client holds it no longer
        while b"\r\n\r\n" not in received and len(received) < 65536:
            chunk = _recv_by(conn, deadline)
            if not chunk:
                break
            received += chunk
        conn.settimeout(STAND_IN_READ)
        conn.sendall(head + body)
        conn.shutdown(socket.SHUT_WR)
        deadline = time.monotonic() + STAND_IN_DRAIN
        while _recv_by(conn, deadline):
            pass


def _recv_by(conn: socket.socket, deadline: float) -> bytes:
    """What the client sent; b"" at its end, or once `deadline` has passed."""
    left = deadline - time.monotonic()
    if left <= 0:
        return b""
    conn.settimeout(left)
    try:
        return conn.recv(65536)
    except TimeoutError:
        return b""


# -- in each server process --------------------------------------------------------


def inherited_socket(fd: int) -> socket.socket:
    """The listening socket the supervisor handed down."""
    sock = socket.socket(fileno=fd)
    sock.setblocking(False)
    return sock


def report_ready(fd: int | None) -> None:
    """Tell the supervisor this process is serving (one byte), then let the pipe go."""
    if fd is None:
        return
    try:
        os.write(fd, b"r")
    except OSError:
        pass  # the supervisor stopped waiting; watching the parent handles the rest
    finally:
        os.close(fd)


def exit_with_supervisor(
    supervisor_pid: int,
    stop: Callable[[], Any],
    heartbeat_fd: int | None = None,
    turning: Callable[[], bool] = lambda: True,
) -> threading.Thread:
    """Call stop() once the supervisor is gone (even SIGKILLed): no orphan servers.
    Meanwhile beat on heartbeat_fd while `turning()` says the server's loop turns."""

    def watch() -> None:
        while os.getppid() == supervisor_pid:
            if heartbeat_fd is not None and turning():
                with contextlib.suppress(OSError):  # full (the supervisor is behind): skip
                    os.write(heartbeat_fd, b"h")
            time.sleep(PARENT_CHECK)
        log.warning("the supervisor (pid %d) is gone; stopping", supervisor_pid)
        stop()

    thread = logs.outside_thread(watch, name="spool-supervisor-watch")
    thread.start()
    return thread

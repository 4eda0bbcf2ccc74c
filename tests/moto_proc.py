"""moto_server as a child process of a test: one way to start, restart and stop it.

Seven test files used to start it their own way. Four read its output from a pipe
until the "Running on" line and then stopped reading: moto logs a line per request,
so a test that made enough requests after that would fill the pipe and stall the
server mid-test. Here its output always goes to a file, which can also be read back
when it fails to start.

It binds a port it chooses (-p 0) and prints it: a port chosen by the test could be
taken by another process (a test on another xdist worker) before moto bound it, and
a probe of that port would then find the other server answering. A restart binds the
same port again, waiting for the old socket to let go of it.

It is moto's server run through tests/moto_server_main.py, which takes the same
arguments: there each DynamoDB request is applied whole before the next (plain
moto_server let a read see half an UpdateItem) and a cancelled transaction undoes
only its own items (plain moto_server put back a copy of the whole table, undoing
other processes' writes). SQS and S3 are moto's as they are.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.procs import ROOT, guarded_env, stop

RUNNING = re.compile(r"Running on http://127\.0\.0\.1:(\d+)")
START_SECONDS = 60.0  # a loaded CI machine has taken tens of seconds to import moto
REBIND_SECONDS = 30.0


class MotoServer:
    """moto_server on 127.0.0.1, its output in `log`; restartable on its port."""

    def __init__(self, log: Path) -> None:
        self.log = log
        self.port = 0
        self.process = self._start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _start(self) -> subprocess.Popen[str]:
        with self.log.open("w") as out:  # the child keeps its own copy of the descriptor
            process = subprocess.Popen(
                [sys.executable, "-m", "tests.moto_server_main", "-H", "127.0.0.1",
                 "-p", str(self.port)],
                cwd=ROOT, env=guarded_env(), stdout=out, stderr=subprocess.STDOUT, text=True,
            )  # fmt: skip
        deadline = time.monotonic() + START_SECONDS
        while time.monotonic() < deadline:
            found = RUNNING.search(self.log.read_text(errors="replace"))
            if found:
                self.port = int(found.group(1))
                return process
            if process.poll() is not None:
                break
            time.sleep(0.1)
        stop(process)
        raise RuntimeError(f"moto_server did not run: {self.log.read_text()[-500:]}")

    def kill(self) -> None:
        """Gone at once, as a crashed server: nothing it held is kept."""
        self.process.kill()
        self.process.wait(10)

    def restart(self) -> None:
        """Stopped (if running) and started again on the same port, empty."""
        stop(self.process)
        deadline = time.monotonic() + REBIND_SECONDS
        while True:  # the port may take a moment to be free again
            try:
                self.process = self._start()
                return
            except RuntimeError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)  # a test may have left it stopped
        stop(self.process)


@contextmanager
def moto_server(log: Path) -> Iterator[MotoServer]:
    """A running MotoServer, stopped however the block ends."""
    server = MotoServer(log)
    try:
        yield server
    finally:
        server.close()

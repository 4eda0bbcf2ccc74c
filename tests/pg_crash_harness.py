"""Long-running `spool worker` processes for the Postgres restart test.

The kill test uses the shared harness (tests/crash_harness.py); a server
restart needs the opposite: workers that are never restarted, to show they
resume on their own. They run like the harness's (concurrency 1,
--sync-finish, short leases, tests/crash_handlers.py recording every
execution) so the two tests count executions the same way.
"""

from __future__ import annotations

import collections
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.crash_handlers import RECORD_DIR_ENV

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class WorkerPool:
    store_url: str
    work_dir: Path
    size: int = 4
    lease_seconds: float = 5.0
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    logs: dict[int, Path] = field(default_factory=dict)  # pid -> its stderr file

    @property
    def record_dir(self) -> Path:
        return self.work_dir / "records"

    def start(self) -> None:
        self.record_dir.mkdir(parents=True, exist_ok=True)
        env = {
            **os.environ,
            "SPOOL_STORE_URL": self.store_url,
            "SPOOL_HANDLERS": "tests.crash_handlers",
            "SPOOL_LEASE_SECONDS": str(self.lease_seconds),
            RECORD_DIR_ENV: str(self.record_dir),
            "PYTHONPATH": str(ROOT),
        }
        command = [sys.executable, "-m", "local.cli", "worker", "--concurrency", "1"]
        command += ["--sync-finish", "--quiet"]
        for n in range(self.size):
            # stderr to a file, not a pipe: a worker logging through an outage must
            # never block on a full pipe nobody reads.
            log = self.work_dir / f"worker-{n}.log"
            with open(log, "wb") as sink:
                proc = subprocess.Popen(
                    command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=sink
                )
            self.logs[proc.pid] = log
            self.procs.append(proc)

    def exited(self) -> list[tuple[int, str]]:
        """Workers that exited on their own (they never should): exit code and log tail."""
        return [
            (p.returncode, self.logs[p.pid].read_text(errors="replace")[-2000:])
            for p in self.procs
            if p.poll() is not None
        ]

    def stop(self, timeout: float = 30.0) -> list[int]:
        """SIGTERM, then wait; returns the exit codes (0 for a graceful stop)."""
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        codes = []
        for p in self.procs:
            try:
                codes.append(p.wait(timeout=max(0.1, deadline - time.monotonic())))
            except subprocess.TimeoutExpired:
                p.kill()
                codes.append(p.wait())
        return codes

    def executions(self) -> collections.Counter[str]:
        counts: collections.Counter[str] = collections.Counter()
        for path in self.record_dir.glob("executions-*.log"):
            counts.update(line for line in path.read_text().splitlines() if line)
        return counts

"""Test schemas made ahead and dropped behind, on one thread of the process's own.

Each Postgres test starts on a new migrated schema with a random name
(tests/pg_support.py fresh_schema) and drops it at its end. Making one took 70-240 ms
of the test's setup and dropping it 30-120 ms of its teardown (the larger figures on a
loaded machine), about 500 times a run. Here a thread keeps one schema made before a
test asks for it, and drops a test's schema after the test has moved on: the work is
the same, each test still gets a schema nothing else ever used, but a test no longer
waits for it.

What a schema holds does not change: the thread makes it with the same make function
the test would have called. A test that arrives before the thread's schema is ready
waits for it a short while (it is nearly done), then makes its own as before. A drop
that fails on the thread (a test left a lock behind that outlasted its sessions) is
tried again when the pool closes, and reported if it fails then too; nothing here
logs while a test runs, so no test's caplog sees the thread. A test that uses no
Postgres starts once the thread is idle (tests/conftest.py, `settle`): tests that
count this process's open descriptors (test_sqlite_wal_watch) or trace its
allocations (test_client_compressed_answers) never see the thread's connections.
"""

from __future__ import annotations

import collections
import logging
import threading
from collections.abc import Callable

# How long a test waits for the schema the thread is making before making its own.
WAIT_FOR_MADE = 10.0
# Schemas kept made ahead: one per process is enough, tests on one worker run in turn.
DEPTH = 1
# How long a test that uses no Postgres waits for the thread to finish its work.
SETTLE = 60.0


class SchemaPool:
    """Made-ahead schema names, and names to drop, served by one daemon thread
    started on first use (a process that runs no Postgres test starts none)."""

    def __init__(self, make: Callable[[], str], drop: Callable[[str], None]) -> None:
        self._make = make
        self._drop = drop
        self._cond = threading.Condition()
        self._ready: collections.deque[str] = collections.deque()
        self._drops: collections.deque[str] = collections.deque()
        self._failed: list[str] = []
        self._wanted = 0
        self._making = False
        self._dropping = False
        self._closing = False
        self._thread: threading.Thread | None = None

    def take(self, depth: int = DEPTH) -> str | None:
        """A schema made ahead, or None: the caller makes its own. Either way the
        thread goes on making schemas until `depth` are ready or under way."""
        with self._cond:
            if self._closing:
                return None
            self._start()
            if not self._ready and (self._making or self._wanted):
                self._cond.wait_for(
                    lambda: bool(self._ready) or not (self._making or self._wanted),
                    timeout=WAIT_FOR_MADE,
                )
            name = self._ready.popleft() if self._ready else None
            self._wanted += max(0, depth - len(self._ready) - self._wanted - self._making)
            self._cond.notify_all()
            return name

    def drop_later(self, name: str) -> None:
        """Drop `name` on the thread (dropped now when the pool is closing)."""
        with self._cond:
            if not self._closing:
                self._start()
                self._drops.append(name)
                self._cond.notify_all()
                return
        self._drop_or_keep(name)

    def settle(self, timeout: float = SETTLE) -> bool:
        """Wait until the thread has nothing under way or queued (False: it still had
        after `timeout` s). A test that counts this process's descriptors or memory
        starts after it (tests/conftest.py), so the thread's connections are not counted."""
        with self._cond:
            return self._cond.wait_for(
                lambda: not (self._drops or self._wanted or self._making or self._dropping),
                timeout=timeout,
            )

    def close(self) -> list[str]:
        """Stop making, drop what is ready or queued, wait for the thread; then try the
        failed drops once more. Returns the names that could not be dropped."""
        with self._cond:
            self._closing = True
            self._wanted = 0
            self._drops.extend(self._ready)
            self._ready.clear()
            thread = self._thread
            self._cond.notify_all()
        if thread is not None:
            thread.join(120)
        with self._cond:
            left = self._drops.copy()
            self._drops.clear()
            failed, self._failed = self._failed, []
        for name in [*left, *failed]:
            self._drop_or_keep(name)
        with self._cond:
            failed, self._failed = self._failed, []
        for name in failed:
            logging.getLogger("tests.pg_ahead").warning("test schema %s was not dropped", name)
        return failed

    def _start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="pg-ahead", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._wanted or self._drops or self._closing)
                # A test may be waiting for a schema: make it before dropping others.
                if self._wanted and not self._closing:
                    self._wanted -= 1
                    self._making = True
                    name = None
                elif self._drops:
                    name = self._drops.popleft()
                    self._dropping = True
                else:
                    return
            if name is None:
                self._made(self._try_make())
            else:
                self._drop_or_keep(name)
                with self._cond:
                    self._dropping = False
                    self._cond.notify_all()

    def _try_make(self) -> str | None:
        try:
            return self._make()
        except Exception:  # the test then makes its own, and meets the error itself
            return None

    def _made(self, name: str | None) -> None:
        with self._cond:
            self._making = False
            if name is not None:
                if self._closing:
                    self._drops.append(name)
                else:
                    self._ready.append(name)
            self._cond.notify_all()

    def _drop_or_keep(self, name: str) -> None:
        try:
            self._drop(name)
        except Exception:
            with self._cond:
                self._failed.append(name)

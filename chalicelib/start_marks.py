"""Telling the store a claimed job's handler is about to run (JobStore.start).

A worker claims ahead of its free threads, unstarted. An attempt is spent only
once its handler may have run, so each pool thread marks its job started, and
waits for that write, before it calls the handler: a worker that dies with jobs
still in its prefetch buffer (or whose claim's reply was lost) leaves them
unstarted, and their lapsed leases give the attempts back; one whose handler
killed it has spent the attempt, so a poison job still ends dead.

One store write per job would cost a drain dearly, so the marks are written as
a group commit: the thread that finds no write in flight writes every mark
asked for so far in one `start` call, and the threads that asked meanwhile wait
for it (or for the next one), each for its own answer: each sleeps on a lock of its
own, released once its answer is in, and the first of those who asked during a write
is woken to write the next. (With one condition for all, each write woke every
waiting thread, those still waiting for the next write too, to sleep again.)

Before it takes the batch, that thread gives way once (`make_way`: a zero sleep,
which hands the interpreter lock to any thread ready to run). With quick handlers
the other pool threads are ready, between their last job and their next mark, but
cannot run while the writer holds the lock: without the yield each write carried
2.3-2.5 marks in a no-op drain at concurrency 8, with it 6.8, a third as many
writes (docs/benchmarks.md, "What the start mark costs the drain"). A lone thread
pays one system call for it, beside a store write, and a wait for the interpreter
lock when another thread holds it: up to its switch interval (5 ms). The worker
gives way only while its handlers are quick (Worker._give_way_if_quick): behind
10 ms handlers nobody is ready to join, and that wait made 1,000 jobs of 10 ms at
concurrency 8 run at 92-94% of ideal instead of 95-96%.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence

from chalicelib.store_outage import lost_write

log = logging.getLogger("spool.worker")

Lease = tuple[str, str]  # (job id, lease token)


def give_way() -> None:
    """Let every thread that is ready run before this one goes on (the GIL's turn)."""
    time.sleep(0)


class _Ask:
    """One thread's mark, and the lock it sleeps on until it is answered."""

    __slots__ = ("answer", "done", "lease", "write")

    def __init__(self, lease: Lease) -> None:
        self.lease = lease
        self.answer = False
        self.write = False  # woken to write the next group itself, not with an answer
        self.done = threading.Lock()
        self.done.acquire()


class StartMarks:
    def __init__(
        self,
        start: Callable[[Sequence[Lease]], list[bool]],
        make_way: Callable[[], None] = give_way,
    ) -> None:
        self._start = start
        self._make_way = make_way
        self._lock = threading.Lock()
        self._asked: list[_Ask] = []  # waiting for the next write
        self._writing = False

    def mark(self, job_id: str, lease_token: str) -> bool:
        """Mark one job started; block until it is written. False: the store refused
        it (the lease lapsed or is another's), so the handler must not run.

        A write that fails (a store outage) counts as marked: the job runs as a
        claimed job always did in an outage, its outcome held until the store is
        back. Only the mark is lost: were the handler to kill the worker before
        then, that attempt would be given back."""
        ask = _Ask((job_id, lease_token))
        with self._lock:
            self._asked.append(ask)
            wait = self._writing
            self._writing = True  # from here, a thread that asks waits for this write
        if wait:
            ask.done.acquire()
            if not ask.write:
                return ask.answer
        try:
            self._make_way()
        finally:
            with self._lock:
                batch, self._asked = self._asked, []
        answers = self._write(batch)
        with self._lock:
            if self._asked:  # asked during the write: the first of them writes the next
                self._asked[0].write = True
                self._asked[0].done.release()
            else:
                self._writing = False
        for other, answer in zip(batch, answers, strict=True):
            other.answer = answer
            if other is not ask:
                other.done.release()
        return ask.answer

    def _write(self, batch: list[_Ask]) -> list[bool]:
        leases = [a.lease for a in batch]
        try:
            with lost_write(
                f"a start mark of {len(leases)} job{'' if len(leases) == 1 else 's'}",
                "they run now either way (one whose mark was not taken gets its attempt "
                "back should this worker die running it)",
            ):
                answers = self._start(leases)
            if len(answers) != len(leases):
                raise ValueError(f"{len(answers)} answers for {len(leases)} marks")
        except Exception as exc:
            log.warning("could not mark %d jobs started (%s); running them", len(batch), exc)
            answers = [True] * len(batch)
        return answers

"""StartMarks: each pool thread's mark is written before its handler runs, and marks
asked for while a write is in flight go together in the next one."""

from __future__ import annotations

import threading
from collections.abc import Sequence

from chalicelib.start_marks import StartMarks


def test_marks_asked_during_a_write_share_the_next_one() -> None:
    calls: list[list[tuple[str, str]]] = []
    first_in = threading.Event()
    let_go = threading.Event()

    def start(leases: Sequence[tuple[str, str]]) -> list[bool]:
        calls.append(list(leases))
        if len(calls) == 1:
            first_in.set()
            assert let_go.wait(5)
        return [token != "stale" for _, token in leases]

    marks = StartMarks(start)
    answers: dict[str, bool] = {}

    def ask(job_id: str, token: str) -> None:
        answers[job_id] = marks.mark(job_id, token)

    first = threading.Thread(target=ask, args=("a", "t"))
    first.start()
    assert first_in.wait(5)
    others = [
        threading.Thread(target=ask, args=(f"j{i}", "stale" if i == 3 else "t")) for i in range(6)
    ]
    for thread in others:
        thread.start()
    for _ in range(500):  # until all six wait behind the write in flight
        if len(marks._asked) == 6:
            break
        threading.Event().wait(0.01)
    let_go.set()
    for thread in [first, *others]:
        thread.join(5)
    assert len(calls) == 2  # the first alone, then the six that asked meanwhile
    assert sorted(calls[1]) == sorted((f"j{i}", "stale" if i == 3 else "t") for i in range(6))
    assert answers == {"a": True, **{f"j{i}": i != 3 for i in range(6)}}


def test_a_failed_write_lets_the_jobs_run() -> None:
    def start(leases: Sequence[tuple[str, str]]) -> list[bool]:
        raise ConnectionError("store down")

    assert StartMarks(start).mark("a", "t") is True


def test_marks_asked_while_the_writer_makes_way_join_its_write() -> None:
    """The thread that will write gives way once before it takes the batch: pool
    threads that were about to ask (ready to run, waiting only for the interpreter)
    join this write rather than each waiting for the next one."""
    calls: list[list[tuple[str, str]]] = []
    answers: dict[str, bool] = {}

    def start(leases: Sequence[tuple[str, str]]) -> list[bool]:
        calls.append(list(leases))
        return [True] * len(leases)

    def ask(job_id: str) -> None:
        answers[job_id] = marks.mark(job_id, "t")

    late: list[threading.Thread] = []

    def make_way() -> None:  # stands for the threads the real yield lets run
        if late:
            return
        late.extend(threading.Thread(target=ask, args=(f"j{i}",)) for i in range(3))
        for thread in late:
            thread.start()
        for _ in range(500):
            if len(marks._asked) == 4:
                break
            threading.Event().wait(0.01)

    marks = StartMarks(start, make_way=make_way)
    ask("a")
    for thread in late:
        thread.join(5)
    assert len(calls) == 1  # one write for all four, not "a" alone and then three
    assert sorted(calls[0]) == [("a", "t"), ("j0", "t"), ("j1", "t"), ("j2", "t")]
    assert answers == {"a": True, "j0": True, "j1": True, "j2": True}

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

"""`--dist loadgroup` hands the `heavy` group out first (tests/xdist_order.py), and
everything else in xdist's own order: the scheduler driven with stand-in workers."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from tests.xdist_order import HeavyFirstScheduling

# Node ids as xdist sees them under loadgroup: a grouped test ends in @group.
COLLECTION = [
    "tests/a.py::one",
    "tests/b.py::t1@tests.b",
    "tests/b.py::t2@tests.b",
    "tests/b.py::t3@tests.b",
    "tests/b.py::t4@tests.b",
    "tests/c.py::model[memory]@heavy",
    "tests/c.py::model[sqlite]@heavy",
    "tests/d.py::two",
    "tests/e.py::crash@heavy",
]


class Worker:
    """What the scheduler calls on a worker: the indices it is sent, in order."""

    def __init__(self, name: str) -> None:
        self.gateway = SimpleNamespace(id=name)
        self.shutting_down = False
        self.sent: list[list[int]] = []

    def send_runtest_some(self, indices: list[int]) -> None:
        self.sent.append(indices)

    def shutdown(self) -> None:
        self.shutting_down = True


class Config:
    option = SimpleNamespace(loadscopereorder=True)

    def getvalue(self, name: str) -> Any:
        assert name == "tx"
        return ["2*popen"]


def test_the_heavy_group_goes_out_first_and_the_rest_by_size() -> None:
    scheduler = HeavyFirstScheduling(Config())  # type: ignore[arg-type]
    workers = [Worker("gw0"), Worker("gw1")]
    for worker in workers:
        scheduler.add_node(worker)
        scheduler.add_node_collection(worker, COLLECTION)
    scheduler.schedule()
    first, second = (
        [COLLECTION[i] for i in sent] for sent in workers[0].sent[0:1] + workers[1].sent[0:1]
    )
    assert first == [
        "tests/c.py::model[memory]@heavy",
        "tests/c.py::model[sqlite]@heavy",
        "tests/e.py::crash@heavy",
    ]
    # Then xdist's order: the most tests first (the four of tests.b), then one each.
    assert second == [f"tests/b.py::t{i}@tests.b" for i in range(1, 5)]
    assert list(scheduler.workqueue) == ["tests/a.py::one", "tests/d.py::two"]


def test_without_a_heavy_group_the_order_is_xdists() -> None:
    scheduler = HeavyFirstScheduling(Config())  # type: ignore[arg-type]
    worker = Worker("gw0")
    scheduler.numnodes = 1
    scheduler.add_node(worker)
    light = [nodeid for nodeid in COLLECTION if not nodeid.endswith("@heavy")]
    scheduler.add_node_collection(worker, light)
    scheduler.schedule()
    assert [light[i] for i in worker.sent[0]] == [f"tests/b.py::t{i}@tests.b" for i in range(1, 5)]

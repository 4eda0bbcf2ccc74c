"""The order in which `--dist loadgroup` hands work out: the `heavy` group first.

pytest-xdist queues its work units (an xdist group, or a single test) by size, the
most tests first, and a worker takes the next unit as it runs short. The `heavy`
group (docs/testing.md: the crash tests and the store model test, one at a time)
holds 9 tests but is the longest unit by far (about 4 minutes of one worker alone,
twice that on a loaded machine): queued behind the module groups with more tests,
it started minutes into the run and its last test ran while the other workers had
nothing left to do. Started first, it runs beside everything else and the other
workers take the rest of the queue as they free up.
"""

from __future__ import annotations

from typing import Any

from xdist.scheduler import LoadGroupScheduling  # type: ignore[import-untyped]

# Units to start before the rest, in this order (the rest keep xdist's order).
FIRST = ("heavy",)


class HeavyFirstScheduling(LoadGroupScheduling):  # type: ignore[misc]  # xdist is untyped
    """LoadGroupScheduling with the FIRST groups moved to the front of the queue
    before the first unit is handed out."""

    _reordered = False

    def _assign_work_unit(self, node: Any) -> None:
        if not self._reordered:
            self._reordered = True
            # xdist's own queue (an OrderedDict of units); a release that renames it
            # loses the order, not the run.
            queue = getattr(self, "workqueue", None)
            for group in reversed(FIRST):
                if queue is not None and group in queue:
                    queue.move_to_end(group, last=False)
        super()._assign_work_unit(node)

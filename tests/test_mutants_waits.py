"""chalicelib/api/waits.py: what `make mutation` found untested.

Written to kill the mutant `make mutation MUTANTS='chalicelib.api.waits*'` left
alive (docs/testing.md): `held(tenant)` counted every tenant's waits, not that
tenant's, and nothing noticed.
"""

from __future__ import annotations

from chalicelib.api.waits import WaitSlots


def test_held_counts_one_tenants_waits_or_everyones() -> None:
    slots = WaitSlots(per_tenant=2, total=4)
    with slots.hold("a"), slots.hold("a"), slots.hold("b"):
        assert slots.held("a") == 2
        assert slots.held("b") == 1
        assert slots.held("c") == 0
        assert slots.held() == 3
    assert slots.held("a") == slots.held("b") == slots.held() == 0

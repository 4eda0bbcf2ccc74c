"""How many whole jobs each store call hands back to a route: the bulk routes must read
and redrive a few at a time (a job may carry a 256 KiB payload), and these tests watch
the store's list_jobs and redrive for it."""

from __future__ import annotations

from typing import Any

import pytest


def count_handed(monkeypatch: pytest.MonkeyPatch, store: Any) -> list[int]:
    """Wrap `store`'s list_jobs and redrive; the list they return grows by the number of
    jobs each call handed back, in call order."""
    handed: list[int] = []
    listing, redriving = store.list_jobs, store.redrive

    def list_jobs(query: Any) -> Any:
        page = listing(query)
        handed.append(len(page.jobs))
        return page

    def redrive(ids: Any, tenant: str | None = None, *more: Any, **kw: Any) -> Any:
        moved = redriving(ids, tenant, *more, **kw)
        handed.append(len(moved))
        return moved

    monkeypatch.setattr(store, "list_jobs", list_jobs)
    monkeypatch.setattr(store, "redrive", redrive)
    return handed

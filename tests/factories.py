"""Small builders shared by tests."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from chalicelib.clock import FakeClock
from chalicelib.ids import new_job_id
from chalicelib.models import NewJob


def new_job(
    clock: FakeClock,
    type_: str = "echo",
    *,
    payload: dict[str, Any] | None = None,
    delay: float = 0.0,
    run_at: datetime | None = None,
    **fields: Any,
) -> NewJob:
    return NewJob(
        id=new_job_id(),
        type=type_,
        payload=payload if payload is not None else {"n": 1},
        run_at=run_at or clock.now() + timedelta(seconds=delay),
        **fields,
    )

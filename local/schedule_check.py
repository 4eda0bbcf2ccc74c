"""SPOOL_SCHEDULES checked before a command relies on it.

`spool schedules` refused a malformed value while `spool worker` and `spool serve`
started anyway and only logged an error at each tick: every periodic job stopped
with the process looking healthy. A bad setting starts nothing, as a bad
SPOOL_WEBHOOKS or SPOOL_LIMITS does.
"""

from __future__ import annotations

from chalicelib import periodic
from chalicelib.runtime import Runtime
from local.cli_errors import UsageError


def checked_schedules(rt: Runtime) -> list[periodic.Schedule]:
    """The enabled schedules, or UsageError for one that is malformed or whose job
    could never be enqueued (an unknown type, a payload its handler refuses)."""
    try:
        schedules = periodic.active_schedules(rt.settings)
    except ValueError as exc:
        fix = "Fix SPOOL_SCHEDULES (JSON: a list, or an object by name)"
        raise UsageError(str(exc), fix) from None
    broken = periodic.problems(rt.service, schedules)
    if broken:
        name, problem = next(iter(broken.items()))
        more = f" ({len(broken) - 1} more schedule(s) broken)" if len(broken) > 1 else ""
        raise UsageError(
            f"schedule {name!r} can never enqueue its job: {problem}{more}",
            "Fix its type or payload in SPOOL_SCHEDULES (or load its handler with SPOOL_HANDLERS)",
        )
    return schedules

"""`spool status ID` for people: the job, a table of its attempts, the last failure's
log lines and traceback.

What it answers: why did this job die (or keep retrying), on which attempt,
and where (which host and process, or which Lambda request). `--json` prints
the same facts for machines (cli.cmd_status).
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

from chalicelib.job_state import Attempt, JobState
from local.tables import one_line, printable

if TYPE_CHECKING:  # a remote command shows the server's answer without pydantic's models
    from chalicelib.models import Job

ERROR_WIDTH = 70


class ShownJob(Protocol):
    """What render shows of a job: chalicelib.models.Job, or a server's answer read
    without pydantic (local/remote_cli.py PlainJob)."""

    @property
    def id(self) -> str: ...
    @property
    def tenant(self) -> str: ...
    @property
    def type(self) -> str: ...
    @property
    def queue(self) -> str: ...
    @property
    def priority(self) -> int: ...
    @property
    def state(self) -> JobState: ...
    @property
    def attempts(self) -> int: ...
    @property
    def max_attempts(self) -> int: ...
    @property
    def run_at(self) -> datetime: ...
    @property
    def created_at(self) -> datetime: ...
    @property
    def finished_at(self) -> datetime | None: ...
    @property
    def last_error(self) -> str | None: ...
    @property
    def result(self) -> Any: ...


HEADERS = ("#", "started (UTC)", "took", "worker", "outcome", "error", "next try in")


def as_json(
    job: Job, attempts: list[Attempt], history_error: dict[str, str] | None = None
) -> dict[str, Any]:
    """The job as `spool status --json` always printed it, plus its attempt history
    (and, when that does not read, attempt_history_error as the API gives it)."""
    from chalicelib.api.schemas import AttemptView, attempt_view

    shown = {
        **job.model_dump(mode="json"),
        "attempt_history": [
            AttemptView.model_validate(attempt_view(a)).model_dump(mode="json") for a in attempts
        ],
    }
    if history_error is not None:
        shown["attempt_history_error"] = history_error
    return shown


def _when(value: datetime | None) -> str:
    return "-" if value is None else value.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def _seconds(value: float | None) -> str:
    if value is None:
        return "-"
    if value < 1:
        return f"{value * 1000:.0f}ms"
    if value < 120:
        return f"{value:.1f}s"
    minutes, seconds = divmod(round(value), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{seconds:02d}s"


def _one_line(text: str, width: int = ERROR_WIDTH) -> str:
    return one_line(text, width)  # control characters escaped (local/tables.py)


def _error(attempt: Attempt) -> str:
    if attempt.error_type and attempt.error:
        return _one_line(f"{attempt.error_type}: {attempt.error}")
    return _one_line(attempt.error_type or attempt.error or "")


def attempts_table(attempts: list[Attempt]) -> list[str]:
    rows = [
        (
            str(a.number),
            _when(a.started_at),
            _seconds(a.seconds),
            a.worker,
            a.outcome,
            _error(a),
            _seconds(a.next_delay),
        )
        for a in attempts
    ]
    widths = [max(len(row[i]) for row in [HEADERS, *rows]) for i in range(len(HEADERS))]
    return [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in [HEADERS, *rows]
    ]


def render(
    job: ShownJob,
    attempts: list[Attempt],
    tenant: str | None = None,
    history_error: str | None = None,
) -> str:
    """tenant: what to show for it when the job's own is not known (a server's answer);
    history_error: why its attempt history does not read, shown in the history's place."""
    lines = [
        f"job       {job.id}",
        f"type      {job.type} (queue {job.queue}, tenant {tenant or job.tenant}, "
        f"priority {job.priority})",
        f"state     {job.state.value}, attempt {job.attempts} of {job.max_attempts}",
        f"created   {_when(job.created_at)}   run at {_when(job.run_at)}"
        + (f"   finished {_when(job.finished_at)}" if job.finished_at else ""),
    ]
    if job.last_error:
        lines.append(f"error     {_one_line(job.last_error, 200)}")
    if job.result is not None:
        # JSON, as `spool jobs` prints it and the API answers it (not Python's repr).
        shown = json.dumps(job.result, ensure_ascii=False)
        lines.append(f"result    {_one_line(shown, 200)}")
    lines.append("")
    if history_error is not None:
        lines.append(history_error)
        return "\n".join(lines)
    if not attempts:
        lines.append("no attempts recorded yet")
        return "\n".join(lines)
    lines.append(f"attempts (the last {len(attempts)}, oldest first)")
    lines.extend("  " + row for row in attempts_table(attempts))
    failed = [a for a in attempts if a.outcome != "succeeded"]
    if failed:
        last = failed[-1]
        lines.append("")
        if last.log_tail:  # the handler's last ctx.log lines (SPOOL_LOG_TAIL_LINES)
            count = len(last.log_tail)
            tail = "its last line" if count == 1 else f"its last {count} lines"
            lines.append(f"log of attempt {last.number} ({tail}):")
            lines.extend("  " + printable(line) for line in last.log_tail)
        if last.traceback:
            lines.append(f"traceback of attempt {last.number} ({last.outcome}, {last.worker}):")
            trace = last.traceback.rstrip("\n").splitlines()
            lines.extend("  " + printable(line) for line in trace)
        else:
            lines.append(f"attempt {last.number} ({last.outcome}) left no traceback")
    return "\n".join(lines)

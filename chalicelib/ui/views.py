"""What each dashboard page shows, as plain dicts for JSON (one function per page).

Everything is read through the store's dashboard reads (JobStore.state_counts,
throughput, oldest_due(tenant=), get_by_key), so the overview and the lists cost
a few small reads however many jobs there are. Every field that came from a
client or a handler (payload, result, errors, tracebacks, logs) goes through
redaction.mask before it is returned.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from chalicelib.models import Attempt, Job, JobState, WorkerBeat
from chalicelib.storage.base import JobStore, minute_of
from chalicelib.ui import redaction

HOUR = timedelta(hours=1)
MINUTES = 60
STATES = [s.value for s in JobState]
ERROR_PREVIEW = 200
QUEUES_SHOWN = 200
# What makes a queue worth a row when there are too many to list: jobs not finished, dead.
ACTIVE = (JobState.QUEUED, JobState.RUNNING, JobState.RETRYING, JobState.DEAD)


def overview(
    store: JobStore, tenant: str | None, live_seconds: float, shown: int = QUEUES_SHOWN
) -> dict[str, Any]:
    """The overview page (and `spool top`): tenant None is every tenant (the CLI only).

    Queue names are the client's to choose, so a tenant can have thousands: the page
    lists the `shown` busiest (most jobs waiting, running or dead) and says how many
    there are, so one page stays small; the totals and the chart count every queue."""
    now = store.clock.now()
    counts = store.state_counts(tenant)
    first = minute_of(now) - timedelta(minutes=MINUTES - 1)
    tallies = store.throughput(first, tenant)
    workers = store.live_workers(live_seconds)
    every = {q for q, _ in counts} | {t.queue for t in tallies}
    names = sorted(every)
    if len(names) > shown:
        busy: dict[str, int] = dict.fromkeys(names, 0)
        for (queue, state), n in counts.items():
            if state in ACTIVE:
                busy[queue] += n
        names = sorted(sorted(names, key=lambda q: (-busy[q], q))[:shown])
    oldest = store.oldest_due(names, tenant=tenant) if names else {}
    series: dict[str, list[list[int]]] = {q: [[0, 0] for _ in range(MINUTES)] for q in names}
    total = [[0, 0] for _ in range(MINUTES)]
    for tally in tallies:
        slot = int((tally.minute - first) / timedelta(minutes=1))
        if 0 <= slot < MINUTES:
            total[slot][0] += tally.succeeded
            total[slot][1] += tally.failed
            if tally.queue in series:
                series[tally.queue][slot][0] += tally.succeeded
                series[tally.queue][slot][1] += tally.failed
    queues = [
        {
            "queue": q,
            "states": {s: counts.get((q, JobState(s)), 0) for s in STATES},
            "oldest_due_seconds": _age(now, oldest.get(q)),
            "workers": _serving(workers, q),
            "throughput": series[q],
            "succeeded_last_hour": sum(m[0] for m in series[q]),
            "failed_last_hour": sum(m[1] for m in series[q]),
        }
        for q in names
    ]
    totals = dict.fromkeys(STATES, 0)
    for (_, state), n in counts.items():
        totals[state.value] += n
    return {
        "now": now,
        "first_minute": first,
        "queues": queues,
        "queues_total": len(every),
        "totals": totals,
        "throughput": total,
        "workers": {"live": len(workers), "within_seconds": live_seconds},
    }


def _age(now: datetime, since: datetime | None) -> float | None:
    return None if since is None else max(0.0, (now - since).total_seconds())


def _serving(workers: Sequence[WorkerBeat], queue: str) -> int:
    return sum(1 for w in workers if w.queues is None or queue in w.queues)


def job_row(job: Job) -> dict[str, Any]:
    """One line of a list: no payload, the start of the last error."""
    error = redaction.text(job.last_error)
    return {
        "id": job.id,
        "type": job.type,
        "queue": job.queue,
        "state": job.state.value,
        "attempts": job.attempts,
        "max_attempts": job.max_attempts,
        "priority": job.priority,
        "run_at": job.run_at,
        "created_at": job.created_at,
        "updated_at": job.updated_at,
        "finished_at": job.finished_at,
        "idempotency_key": redaction.text(job.idempotency_key),
        "error": None if error is None else error[:ERROR_PREVIEW],
    }


def job_detail(
    job: Job, attempts: Sequence[Attempt], history_error: str | None = None
) -> dict[str, Any]:
    """The job page's job; `history_error` says why its attempt history does not read."""
    return {
        **job_row(job),
        "error": redaction.text(job.last_error),
        "payload": redaction.mask(job.payload),
        "result": redaction.mask(job.result),
        "started_at": job.started_at,
        "timings": _timings(job),
        "can_cancel": job.state in (JobState.QUEUED, JobState.RETRYING),
        "can_redrive": job.state is JobState.DEAD,
        "attempt_history": [_attempt(a) for a in attempts],
        "attempt_history_error": history_error,
    }


def _timings(job: Job) -> dict[str, float | None]:
    def between(a: datetime | None, b: datetime | None) -> float | None:
        return None if a is None or b is None else round((b - a).total_seconds(), 6)

    return {
        "waited_seconds": between(job.created_at, job.started_at),
        "ran_seconds": between(job.started_at, job.finished_at),
        "total_seconds": between(job.created_at, job.finished_at),
    }


def _attempt(attempt: Attempt) -> dict[str, Any]:
    return {
        "number": attempt.number,
        "started_at": attempt.started_at,
        "finished_at": attempt.finished_at,
        "seconds": attempt.seconds,
        "worker": attempt.worker,
        "outcome": attempt.outcome,
        "error_type": attempt.error_type,
        "error": redaction.text(attempt.error),
        "traceback": redaction.text(attempt.traceback),
        "next_delay": attempt.next_delay,
        "log_tail": [redaction.text(line) for line in attempt.log_tail],
    }


def schedules(
    store: JobStore, active: Sequence[Any], tenant: str, system_tenant: str, last: int = 5
) -> dict[str, Any]:
    """Each periodic schedule, its next run and its last ticks' jobs, for the system
    tenant's keys; any other tenant sees none (hidden()).

    Schedules are the operator's: periodic jobs belong to the system tenant, and a
    tenant sees only its own jobs. Their names, types, queues and cadences were
    listed to every tenant's key, telling each what the operator runs and when."""
    if tenant != system_tenant:
        return hidden(system_tenant)
    now = store.clock.now()
    rows = []
    for schedule in sorted(active, key=lambda s: s.name):
        ticks: list[datetime] = []
        tick = schedule.latest_tick(now)
        while tick is not None and len(ticks) < last:
            ticks.append(tick)
            tick = schedule.latest_tick(tick - timedelta(microseconds=1))
        runs = []
        for tick in ticks:
            job = store.get_by_key(system_tenant, schedule.key(tick))
            runs.append({"tick": tick, "job": None if job is None else job_row(job)})
        rows.append(
            {
                "name": schedule.name,
                "type": schedule.type,
                "queue": schedule.queue,
                "when": schedule.describe(),
                "next_run": schedule.next_tick(now),
                "last_runs": runs,
            }
        )
    return {"schedules": rows, "jobs_visible": True, "system_tenant": system_tenant}


def hidden(system_tenant: str) -> dict[str, Any]:
    """The schedules page for a tenant that is not the system tenant: nothing of them."""
    return {"schedules": [], "jobs_visible": False, "system_tenant": system_tenant}

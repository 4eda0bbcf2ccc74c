"""The JSON a webhook carries (Standard Webhooks' {type, timestamp, data} shape).

    {"type": "job.succeeded", "timestamp": "2026-12-01T09:46:21.000000Z",
     "data": {"id": "j_...", "state": "succeeded", "type": "resize_image",
              "queue": "default", "attempts": 1, "max_attempts": 5,
              "result": {...}, "last_error": null, "idempotency_key": null,
              "created_at": "...", "finished_at": "..."}}

`timestamp` is when the job reached that state (the delivery's creation), the
same on every retry. `data` is read from the job when the delivery is made; if
the job has moved on since (redriven, or purged), data holds only its id and
the state the event announces, and the receiver asks GET /status for the rest.
A result over SPOOL_WEBHOOK_MAX_RESULT_BYTES is left out (`result_omitted`), and
`last_error` is cut to its first MAX_ERROR_CHARS characters (`last_error_truncated`),
so the body always fits the delivery's request (http_request's 128 KiB body).
The job's payload is never sent: it may hold what the receiver should not see.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from chalicelib.models import Job
from chalicelib.webhooks.outbox import Delivery

MAX_ERROR_CHARS = 4096


def _time(when: datetime | None) -> str | None:
    return None if when is None else when.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def build(delivery: Delivery, job: Job | None, max_result_bytes: int) -> bytes:
    state = delivery.event.removeprefix("job.")
    data: dict[str, Any] = {"id": delivery.job_id, "state": state}
    if job is not None and job.state.value == state:
        result = job.result
        omitted = False
        if result is not None and len(json.dumps(result, separators=(",", ":"))) > max_result_bytes:
            result, omitted = None, True
        error = job.last_error
        cut = error is not None and len(error) > MAX_ERROR_CHARS
        if cut:  # an exception's message is unbounded; the body must fit one POST
            error = (error or "")[:MAX_ERROR_CHARS]
        data.update(
            {
                "type": job.type,
                "queue": job.queue,
                "attempts": job.attempts,
                "max_attempts": job.max_attempts,
                "result": result,
                "last_error": error,
                "idempotency_key": job.idempotency_key,
                "created_at": _time(job.created_at),
                "finished_at": _time(job.finished_at),
            }
        )
        if omitted:
            data["result_omitted"] = True
        if cut:
            data["last_error_truncated"] = True
    event = {"type": delivery.event, "timestamp": _time(delivery.created_at), "data": data}
    return json.dumps(event, separators=(",", ":"), ensure_ascii=False).encode()

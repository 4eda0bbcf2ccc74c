"""A page of jobs as GET /jobs and GET /dlq answer it, ended early before it is too large.

A page may ask for 1000 jobs, and each job may carry a payload and a result of
256 KiB: read and encoded at once, one request of one tenant could make the
server build half a gigabyte, and Lambda refuses any answer over 6 MB. So the
store is read in small steps (at most MAX_STEP jobs each, fewer when the jobs read
so far say fewer fit), each job is encoded once, and the page ends at the last job
that fits PAGE_BYTES, with `next_cursor` there; a client following cursors reads
every job all the same.

Lambda measures the answer as it hands it to API Gateway: the body inside a JSON
document, so every `"` and `\\` in it counts twice (a payload of quotes is double
its length there). A job's size is counted that way. Responses are ASCII
(non-ASCII is escaped), so characters are bytes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from chalicelib.api.http import dumps
from chalicelib.api.schemas import job_view
from chalicelib.models import Job, JobPage, JobQuery
from chalicelib.storage.base import encode_cursor

# Under Lambda's 6 MB answer with room for headers; one job alone may pass it.
PAGE_BYTES = 4 * 1024 * 1024
# The first read: small enough that large jobs cost little memory before the next
# step's size is planned from them.
FIRST_STEP = 20
# The most jobs one later read holds, whatever the ones before suggest: planned from
# 20 small jobs alone, the next read asked for every job up to the limit, and a
# tenant whose small jobs came before hundreds of large ones had one GET /jobs hold
# them all (800 MB over HTTP for a 4 MB page, stop 47). As the dashboard's READ_STEP.
MAX_STEP = 50


def page_body(
    list_jobs: Callable[[JobQuery], JobPage], query: JobQuery, budget: int | None = None
) -> str:
    """The JSON body of one page: {"jobs": [...], "next_cursor": ...}, of about
    `budget` characters at most (PAGE_BYTES when not given)."""
    budget = PAGE_BYTES if budget is None else budget
    encoded: list[str] = []
    size = 0
    last: Job | None = None
    step = min(query.limit, FIRST_STEP)
    cursor = query.cursor
    while True:
        page = list_jobs(replace(query, limit=step, cursor=cursor))
        for job in page.jobs:
            text = dumps(job_view(job))
            cost = carried_size(text)
            if last is not None and size + cost > budget:
                return _body(encoded, encode_cursor(last.created_at, last.id, query.newest_first))
            encoded.append(text)
            size += cost + 1
            last = job
        left = query.limit - len(encoded)
        if not page.jobs or page.next_cursor is None or left <= 0:
            return _body(encoded, page.next_cursor)
        cursor = page.next_cursor
        per_job = size / len(encoded)
        step = max(1, min(left, int((budget - size) / per_job), MAX_STEP))


def carried_size(text: str) -> int:
    """Bytes `text` takes inside Lambda's answer document: each quote and backslash
    is escaped once more there."""
    return len(text) + text.count('"') + text.count("\\")


def _body(encoded: list[str], next_cursor: str | None) -> str:
    return '{"jobs":[' + ",".join(encoded) + '],"next_cursor":' + dumps(next_cursor) + "}"

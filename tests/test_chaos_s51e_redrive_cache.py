"""A redrive answered 200 is never followed by a cached `dead` from the same process.

Was: a status read that had taken its cache ticket and read the job dead, when a
redrive of that job finished in between (the dashboard polling a job while the
person redrives it), put its `dead` answer into the cache after the redrive's
drop: the drop emptied the entry but left the ticket good. The next `GET /status`
answered `dead` (X-Cache: hit) for a job already queued again, until the tenant's
epoch was next read (up to `recheck`) or, with the recheck not due, the answer's TTL.

Now a drop also voids the tenant's outstanding tickets (ResultCache.drop bumps the
share's generation), as an epoch change does: a put that may predate the change
is refused.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from chalice.test import Client

import app as spool_app
from chalicelib.api.cache import ResultCache
from tests.apikit import Api, installed, settings_for
from tests.test_limits_api import dead_jobs


def test_a_put_with_a_ticket_taken_before_a_drop_is_refused() -> None:
    now = [0.0]
    cache = ResultCache(10, 60.0, timer=lambda: now[0], epoch=lambda tenant: 0, recheck=60.0)
    ticket = cache.ticket("t")
    cache.drop("t", "j_1")  # a redrive moved j_1 after the read behind `ticket`
    assert cache.put("t", "j_1", '{"state": "dead"}', ticket) is False
    assert cache.lookup("t", "j_1") is None
    fresh = cache.ticket("t")
    assert cache.put("t", "j_1", '{"state": "queued"}', fresh) is True


def test_a_status_read_racing_a_redrive_leaves_no_dead_answer_cached(tmp_path: Path) -> None:
    with (
        installed(settings_for(tmp_path)) as rt,
        Client(spool_app.app, stage_name="local") as client,
    ):
        api = Api(client)
        [job_id] = dead_jobs(rt, 1)
        real_get = rt.store.get
        raced: list[int] = []

        def get_then_redrive(*args: Any, **kw: Any) -> Any:
            read = real_get(*args, **kw)
            if not raced:  # the redrive lands between this read and the cache's put
                raced.append(0)
                raced[0] = api.post(f"/dlq/{job_id}/redrive").status
            return read

        rt.store.get = get_then_redrive  # type: ignore[method-assign]
        try:
            first = api.get(f"/status/{job_id}")
        finally:
            rt.store.get = real_get  # type: ignore[method-assign]
        assert raced == [200]
        assert first.json["state"] == "dead"  # read before the redrive: true then
        after = api.get(f"/status/{job_id}")
        assert after.json["state"] == "queued", (after.json["state"], after.header("X-Cache"))

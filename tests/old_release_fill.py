"""Fill a store the way an earlier Spool release left it, run with THAT release's code.

tests/test_old_release_upgrade.py runs this file in a child process whose PYTHONPATH
starts with an earlier release's source tree (git archive of a pinned commit), so every
row, key and trigger is written by the old code itself, not by today's code imitating
it. It prints one JSON object: the job id of each state it left, and the old code's own
counts, for today's code to check against. `claim URL NOW` is instead one claim of an
old worker that then dies (what a rolling upgrade leaves).

Only the store API every release since 0007 has (add, claim, finish, cancel) is used,
with arguments that release took, so the same file fills any of the pinned releases.
"""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime, timedelta

from chalicelib.clock import FakeClock
from chalicelib.ids import new_job_id
from chalicelib.models import Completion, JobState, NewJob
from chalicelib.storage import open_store

START = datetime(2030, 1, 1, tzinfo=UTC)
LEASE = 30.0
HOOK = "http://127.0.0.1:9/hook"  # never called: the tests only look at the delivery rows


def main(url: str) -> None:
    if url.startswith("postgresql"):
        from chalicelib.storage import migrations
        from chalicelib.storage.postgres import connect, parse_url

        settings = parse_url(url)
        with connect(settings) as conn:
            migrations.migrate(conn, settings.schema)
    if url.startswith("dynamodb"):
        from chalicelib.storage.dynamodb_aws import DynamoConfig, create_resources, make_clients

        config = DynamoConfig.from_url(url)
        create_resources(config, *make_clients(config))
    clock = FakeClock(START)
    store = open_store(url, clock)

    def add(key: str, **fields: object) -> str:
        job = NewJob(
            id=new_job_id(),
            type="echo",
            payload={"state": key},
            run_at=clock.now() + timedelta(seconds=float(fields.pop("delay", 0.0))),  # type: ignore[arg-type]
            idempotency_key=f"key-{key}",
            **fields,  # type: ignore[arg-type]
        )
        [result] = store.add([job])
        return result.job.id

    def claimed(job_id: str) -> str:
        [job] = store.claim(1, LEASE, ids=[job_id])
        assert job.lease_token is not None
        return job.lease_token

    ids = {
        "queued": add("queued", callback_url=HOOK),
        "scheduled": add("scheduled", delay=3600.0),
        "periodic": add("periodic", tenant="_system", delay=60.0),
        "cancelled": add("cancelled", delay=3600.0),
        "retrying": add("retrying", max_attempts=3),
        "succeeded": add("succeeded", callback_url=HOOK),
        "dead": add("dead", max_attempts=1, callback_url=HOOK),
        "running": add("running", max_attempts=3),
    }
    store.cancel(ids["cancelled"])
    ends = (
        ("retrying", JobState.RETRYING, None, "try again"),
        ("succeeded", JobState.SUCCEEDED, {"answer": 42}, None),
        ("dead", JobState.DEAD, None, "boom"),
    )
    for name, state, result, error in ends:
        token = claimed(ids[name])
        retry_at = clock.now() + timedelta(seconds=10) if state is JobState.RETRYING else None
        done = Completion(ids[name], token, state, result=result, error=error, retry_at=retry_at)
        assert store.finish([done]) == [True]
    claimed(ids["running"])  # left running: its worker "died" in the upgrade
    counts = {f"{queue}/{state.value}": n for (queue, state), n in store.counts().items()}
    store.close()
    code = sys.modules["chalicelib"].__file__
    print(json.dumps({"ids": ids, "counts": counts, "code": code}))


def claim_one(url: str, now: str) -> None:
    """An old worker's one claim at `now` (its reap first, as every claim does), then it
    dies with the job running: prints the claimed ids."""
    store = open_store(url, FakeClock(datetime.fromisoformat(now)))
    jobs = store.claim(1, LEASE)
    store.close()
    code = sys.modules["chalicelib"].__file__
    print(json.dumps({"claimed": [job.id for job in jobs], "code": code}))


if __name__ == "__main__":
    if sys.argv[1] == "claim":
        claim_one(sys.argv[2], sys.argv[3])
    else:
        main(sys.argv[1])

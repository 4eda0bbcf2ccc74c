"""The Redis store's claim under a ClaimPolicy (the rules are in storage/base.py).

Everything is decided inside one Lua script (redis_limits_lua.CLAIM_POLICY), not
by WATCH/MULTI: a claim reads what many other scripts write (every add, claim
and finish moves the due and running indexes), so an optimistic transaction
would be retried over and over exactly when workers are busiest, while a script
runs once, atomically, in one round trip. The price is that limits.Admission
and limits.fair_pick are written a second time, in Lua, with the same rules and
the same ties; this side only packs the policy and records the holds the script
reports into `policy.holds`.

The indexes the decision needs beyond the store's own (running jobs per type,
due jobs per queue and type, due jobs per tenant) are kept only once a claim
under a policy has needed them, so a store that never sees a policy pays one
GET per script and nothing per job.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal

from chalicelib.limits import STEP_BACK, ClaimPolicy, Hold
from chalicelib.models import Job
from chalicelib.storage.base import to_micros

if TYPE_CHECKING:
    from chalicelib.storage.redis_store import RedisStore

# Due jobs one claim may copy into an index it has just started keeping (jobs that were
# due before it was kept); claims that need that index take nothing until it is full.
# About 0.1 s of server time per part (like CLAIM's cap on promotions), so a backlog of
# a million is indexed over 100 claims, never in one script that blocks the server.
BACKFILL_PER_CLAIM = 10_000
_KINDS: dict[bytes, Literal["concurrency", "rate"]] = {
    b"concurrency": "concurrency",
    b"rate": "rate",
}


def indexes_needed(policy: ClaimPolicy, by_ids: bool) -> str:
    """The optional indexes (redis_limits_lua's letters) this claim reads.

    'a': running jobs per type, for a concurrency limit on a type. 'b': due jobs
    per queue and type, to skip a full type's jobs in order. 'c': due jobs per
    tenant, for fair turns. A claim of named jobs reads the jobs themselves."""
    types = [lim for lim in policy.limits if lim.scope == "type"]
    letters = "a" if any(lim.concurrency is not None for lim in types) else ""
    if by_ids:
        return letters
    if policy.fair:
        return letters + "c"
    return letters + ("b" if types else "")


def policy_arg(policy: ClaimPolicy, now: datetime, by_ids: bool) -> str:
    """The policy as the script's last argument (JSON: names may be any text)."""
    limits = [
        [
            lim.key,
            lim.concurrency or 0,
            lim.rate.count if lim.rate else 0,
            str(to_micros(now - timedelta(seconds=lim.rate.window))) if lim.rate else 0,
        ]
        for lim in policy.limits
    ]
    packed = {
        "l": limits,
        "t": int(any(lim.scope == "type" for lim in policy.limits)),
        "f": int(policy.fair),
        "w": dict(policy.weights),
        "ix": indexes_needed(policy, by_ids),
        "bf": BACKFILL_PER_CLAIM,
        # Starts dated after this were recorded before the clock stepped back.
        "ah": str(to_micros(now + timedelta(seconds=STEP_BACK))),
    }
    return json.dumps(packed, ensure_ascii=False, separators=(",", ":"))


def record_holds(policy: ClaimPolicy, holds: Sequence[Sequence[bytes]]) -> None:
    """The script's holds, into the calling thread's HoldLog (as Admission.admit would)."""
    for job_id, key, kind in holds:
        policy.holds.record(
            Hold(job_id.decode(), key.decode("utf-8", "surrogatepass"), _KINDS[kind])
        )


def claim(
    store: RedisStore,
    limit: int,
    lease_seconds: float,
    queues: Sequence[str] | None,
    ids: Sequence[str] | None,
    policy: ClaimPolicy,
    started: bool = True,
) -> list[Job]:
    """RedisStore.claim with an active policy: one CLAIM_POLICY script."""
    now, args = store.claim_args(limit, lease_seconds, queues, ids, started)
    args.append(policy_arg(policy, now, ids is not None))
    reply: list[Any] = store.run_script("CLAIM_POLICY", args)
    claimed, buried, holds = reply
    record_holds(policy, holds)
    return store.claimed_jobs(claimed, buried)


def take_tokens(store: RedisStore, key: str, rate: float, burst: int, cost: int) -> float:
    """RedisStore.take_tokens: one TAKE_TOKENS script, so every process shares the bucket."""
    now = to_micros(store.clock.now())
    step = int(STEP_BACK * 1_000_000)  # limits.bucket_stamp's, in micros
    args = [key, repr(float(rate)), burst, cost, now, step]
    return float(store.run_script("TAKE_TOKENS", args))

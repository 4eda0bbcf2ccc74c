"""A rate's line of held jobs: where a job a rate held back stands, so the SQS worker
sends its new message back for when the jobs ahead of it have started
(chalicelib/events.py, held_delay), not a couple of seconds later whatever is ahead.

Why a line in the store. Every held job used to come back about 2 s later, so a
backlog of B jobs under N/s was received and claimed about B / N / 2 times per job
(1,000 jobs under "10/s": about 500 receives a second to start 10). A delay must
grow with the work held ahead of the job under the same limit, and no one message
knows that: the count of holds a message carries says how long the job waited, not
how many wait before it (a delay doubling with it leaves the rate idle while held
jobs sleep out long delays, and its tail never drains), and one batch's holds are
at most ten of the backlog. The store is what every worker shares, so the line is
kept there, in the token bucket every store already keeps atomically
(JobStore.take_tokens), under its own key ("held:type:send_email"):

- the bucket's room below its burst is the line: each held job takes a place
  (a token), and places leave at the rate's pace, `count` per `window` (Rate.window,
  the pace the claim admits at), as the jobs at the front start;
- asking for more than the burst takes nothing and says how far the bucket is from
  full (JobStore.take_tokens), that is how many places are taken.

A place is two store calls per batch and limit (a look, then the take), not per
job. The line is an estimate, never a limit: a job that comes back to a window
still full (the claim decides, as before) is held again and takes a new place at
the back, and jobs the rate admits without being held (fresh ones) are not in it.
The look and the take are two steps: two invocations joining at once may be given
the same places, and of two jobs back in one place one is held again. Looking
first errs that way, never toward a place no job comes back to (an idle rate).
The line is at most SQS's 900 s of the rate's starts long; past that a held job
waits the 900 s and asks again.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from chalicelib.limits import Limit
from chalicelib.storage.base import JobStore

log = logging.getLogger("spool.events")

KEY_PREFIX = "held:"  # token bucket keys: "held:" + the limit's key
LONGEST = 900.0  # SQS's DelaySeconds ceiling: a line longer than this is no help


@dataclass(frozen=True)
class Place:
    """Where the first of a batch's held jobs stands in its rate's line: `ahead`
    places are taken before it, and the line moves one place every `spacing` s."""

    ahead: float
    spacing: float

    def after(self, n: int) -> Place:
        """The place of the job `n` behind this one (the same batch's next jobs)."""
        return Place(self.ahead + n, self.spacing)

    @property
    def wait(self) -> float:
        """Seconds until the jobs ahead have started."""
        return self.ahead * self.spacing


def pace(limit: Limit) -> float:
    """Starts per second the rate admits over time: `count` per Rate.window."""
    assert limit.rate is not None
    return limit.rate.count / limit.rate.window


def join(store: JobStore, limit: Limit, count: int) -> Place | None:
    """Take `count` places at the back of `limit`'s line; the first one's place. None
    when the store would not say (an outage): the caller waits as it did before."""
    if limit.rate is None or count <= 0:
        return None
    per_second = pace(limit)
    size = max(1, int(LONGEST * per_second))  # the bucket's burst: the line's length
    key = KEY_PREFIX + limit.key
    try:
        # (places taken + 1) / pace: a take of one more than the burst is never granted.
        taken = max(0.0, store.take_tokens(key, per_second, size, size + 1) * per_second - 1)
        if taken + count <= size:
            store.take_tokens(key, per_second, size, count)
    except Exception as exc:  # the store's trouble: the jobs are held either way
        log.warning("could not read the line of jobs held under %s: %s", limit.key, exc)
        return None
    return Place(min(taken, float(size)), 1.0 / per_second)

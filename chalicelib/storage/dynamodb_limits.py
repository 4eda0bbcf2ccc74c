"""Limits and fair turns in the DynamoDB store's claim (the rules: chalicelib/limits.py).

Only a claim given an active ClaimPolicy comes here; without one the store
claims as before and reads nothing of this.

State, in the store's own table (dynamodb_schema.py):

- one item per limit key (``L#type:resize``): ``run``, the ids its claims
  started that may still be running, and ``starts``, the start times inside its
  rate window, with a version ``ver``;
- one item for fair turns (``T``): each tenant's pass and the clock, versioned.

A claim reads those items (one consistent BatchGetItem), lets limits.Admission
and limits.fair_pick choose, reads the chosen jobs' items (one consistent
BatchGetItem), then writes the claimed jobs and every limit or turns item it took
room from in ONE TransactWriteItems, each item conditional on the version read
(a job's version also means it is still due and waiting). Two workers that read
the same version cannot both commit, so together they never exceed a
concurrency limit or a rate; the loser reads again (bounded retries). The winner
builds its claimed jobs from the items it read with its own changes applied: a
transaction returns no items, and a read after the commit that failed would
strand the jobs it claimed (running, an attempt spent, no worker to run them
until their leases lapse). Every read comes before the write, which claims
nothing if it fails.

A claim of more jobs than one transaction holds (round_size: 100 actions less one
per limit item and the turns item, so 98 jobs under one limit) runs in rounds, each
its own read, decision and transaction. When a later round fails (throttled, say),
the jobs earlier rounds claimed are returned to run, not lost with a raise, and
the named jobs not claimed are sent again (PolicyClaim._cut_short).

Finish, reap and cancel do not touch the limit items: ``run`` is pruned lazily.
A claim that could be held back by a concurrency limit first checks the jobs in
its ``run`` with one consistent read (state and lease), and counts only those
still running under a live lease (an expired one is reaped, or is about to be).
So finish stays one write, and the check costs a read only near the limit, or
once `run` holds RUN_PRUNE_AT ids (else a limit far above what runs grew its item
past DynamoDB's 400 KB, and every claim under it failed).
Those checks are safe against races: between the check and the commit a job can
only stop running (which frees room), and a job can only start running through
a claim, which bumps the version this one is conditional on.

Candidates come from indexes, never from a scan: the ``due`` index (best first,
with the type from the store's cache of static fields) without fairness; with
it, ``due_tenants`` tells which tenants have waiting jobs (one short query per
few tenants, skipping past each tenant's entries) and ``tenant_due`` gives one
tenant's waiting jobs best first, read only when that tenant's turn comes. Both
readers leave a priority as soon as they meet a job not yet due (run_at orders
the rest of it), and each gives up after a bounded number of entries, so a
backlog held back by a limit that fills during the claim costs a bounded read,
not a scan. The due jobs of a limit full before the claim's decision are filtered
out of those reads (the due index has no type: when its read ends at the bound
with a type's limit full, it goes on from every waiting tenant's `tenant_due`): a
run of more of them than the bound hid every job behind it for as long as the
limit stayed full.
"""

from __future__ import annotations

import dataclasses
import heapq
import itertools
import json
import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

from botocore.exceptions import ClientError

from chalicelib.errors import StoreNotMigrated, StoreUnavailable
from chalicelib.limits import (
    STEP_BACK,
    Admission,
    ClaimPolicy,
    FairPick,
    Hold,
    HoldLog,
    bucket_stamp,
    fair_pick,
    limit_keys,
    refill,
    take,
)
from chalicelib.models import Job, JobState
from chalicelib.storage.base import micros_of
from chalicelib.storage.dynamodb_schema import (
    GSI_DUE,
    GSI_DUE_TENANTS,
    GSI_TENANT_DUE,
    LIMIT_PREFIX,
    TURNS_PK,
    Expr,
    bucket_key,
    due_partition,
    dumps,
    get_n,
    get_s,
    job_id_of,
    job_key,
    limit_item_key,
    n,
    need_n,
    need_s,
    s,
    tenant_partition,
    turns_key,
)
from chalicelib.storage.dynamodb_txn import TRANSACTION_ACTIONS, TRANSACTION_ATTEMPTS

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.type_defs import AttributeValueTypeDef, TransactWriteItemTypeDef

    from chalicelib.storage.dynamodb import DynamoStore

    Item = dict[str, AttributeValueTypeDef]

log = logging.getLogger("spool.dynamodb")

WAITING = (JobState.QUEUED.value, JobState.RETRYING.value)
# Entries a claim looks at before giving up: without fairness in all, with it per
# tenant. Bounds the read when a full limit holds back a long run of due jobs.
EXAMINE = 1000
EXAMINE_PER_TENANT = 250
DISCOVERY_PAGE = 100  # due_tenants entries per query when finding tenants
TENANT_PAGE = 50  # tenant_due entries per query: a turn or two, or a run of held jobs
# While full limits' due jobs are filtered out (DynamoDB's Limit counts the entries it
# reads, not those it returns), each further page of a read doubles, up to this many
# entries: a long run of held jobs in few requests.
FILTERED_PAGE = 1000
# Full queues (and types) a read filters out, at most: DynamoDB takes 100 values in an IN
# list and 4 KB of expression. The jobs of any more are left to the claim's admission.
FILTER_MOST = 40
BATCH_GET = 100  # BatchGetItem's limit
# A limit item's `run` is pruned once it holds this many ids, however high the limit:
# pruned only near the limit, a limit far above what runs (50,000) kept every id its
# claims started, 37 bytes each, and at ~10,600 the item passed DynamoDB's 400 KB and
# every claim under the limit failed. 1000 ids: 37 KB, one prune (10 reads of 100)
# every 1000 starts.
RUN_PRUNE_AT = 1000
MICRO = 1_000_000
BUCKET_ATTEMPTS = 20  # takes of one bucket that may race before giving up
BUCKET_KEEP_SECONDS = 3600  # a bucket item outlives the moment it is full again by this
# A claim with limits writes its jobs and the limit items in one transaction; up to
# two limit keys per job, so 32 jobs always fit, and most policies leave room for more.
MIN_ROUND = 32


@dataclass(frozen=True)
class Candidate:
    """A due job as an index showed it: enough to apply the limits and claim it."""

    id: str
    tenant: str
    queue: str
    type: str
    due_sk: str


@dataclass
class LimitState:
    """One limit item as read: None for `ver` when it does not exist yet."""

    key: str
    ver: int | None = None
    run: list[str] = field(default_factory=list)
    starts: list[tuple[int, int]] = field(default_factory=list)

    @classmethod
    def of(cls, key: str, item: Mapping[str, AttributeValueTypeDef] | None) -> LimitState:
        if item is None:
            return cls(key)
        starts = json.loads(get_s(item, "starts") or "[]")
        return cls(
            key,
            need_n(item, "ver"),
            list(json.loads(get_s(item, "run") or "[]")),
            [(int(at), int(count)) for at, count in starts],
        )


@dataclass
class TurnsState:
    """The fair turns item as read: each tenant's pass (those ahead of the clock)."""

    ver: int | None = None
    clock: float = 0.0
    passes: dict[str, float] = field(default_factory=dict)

    @classmethod
    def of(cls, item: Mapping[str, AttributeValueTypeDef] | None) -> TurnsState:
        if item is None:
            return cls()
        turns = json.loads(need_s(item, "turns"))
        return cls(need_n(item, "ver"), float(turns["clock"]), dict(turns["passes"]))


@dataclass
class State:
    limits: dict[str, LimitState]
    turns: TurnsState | None
    running: dict[str, int]
    started: dict[str, int]
    # Per rate limit key, (seconds from now until it leaves the window, count) of each
    # recorded start: when a held job's limit admits again (limits.Hold.wait).
    leaving: dict[str, list[tuple[float, int]]] = field(default_factory=dict)


@dataclass
class Decision:
    chosen: list[Candidate]
    admission: Admission
    holds: list[Hold]
    pick: FairPick[Candidate] | None = None


def versioned_update(
    table: str, key: Item, fields: Mapping[str, AttributeValueTypeDef], ver: int | None
) -> Any:
    """SET `fields` and bump `ver`, unless the item was written since it was read at
    `ver` (None: it did not exist). An UpdateItem, not a PutItem: the worker
    function's role may update the table but not put into it (infra/generate.py)."""
    expr = Expr()
    for attr, value in fields.items():
        expr.set(attr, value)
    expr.set("ver", n((ver or 0) + 1))
    if ver is None:
        condition = f"attribute_not_exists({expr.name('pk')})"
    else:
        condition = f"{expr.name('ver')} = {expr.value(n(ver))}"
    return {
        "TableName": table,
        "Key": key,
        "UpdateExpression": expr.update_expression(),
        "ConditionExpression": condition,
        **expr.placeholders(),
    }


def round_size(policy: ClaimPolicy) -> int:
    """Jobs one transaction claims: 100 actions less one per limit item and the turns."""
    return max(MIN_ROUND, TRANSACTION_ACTIONS - 1 - len(policy.limits))


class PolicyClaim:
    """One call of `claim` with a policy: rounds of read, decide, commit."""

    def __init__(
        self,
        store: DynamoStore,
        policy: ClaimPolicy,
        now: int,
        expires: int,
        queues: Sequence[str] | None,
        started: bool = True,
    ) -> None:
        self.store = store
        self.policy = policy
        self.started = started  # False: leased unstarted until JobStore.start
        self.now = now  # read again for each try of a round's transaction (_round)
        self.lease = expires - now
        self.queues = None if queues is None else set(queues)
        self.skip: set[str] = set()  # claimed here, or found taken by someone else
        self.reported: set[str] = set()  # ids whose hold is already in policy.holds
        self.reported_full: set[str] = set()  # limit keys whose "" hold is in it
        # Queues and types whose limits were full when the decision began: their due
        # jobs are left out of the index reads (_due_run), so they cost none of EXAMINE.
        self.full_queues: list[str] = []
        self.full_types: list[str] = []

    @property
    def expires(self) -> int:
        """When the leases this claim writes run out: its lease from the clock it read."""
        return self.now + self.lease

    # -- the claim -------------------------------------------------------------------------
    def run(self, limit: int, ids: Sequence[str] | None) -> list[Job]:
        named = self._named(ids) if ids is not None else None
        fair = self.policy.fair and ids is None
        claimed: list[Job] = []
        while len(claimed) < limit:
            want = min(round_size(self.policy), limit - len(claimed))
            try:
                got = self._round(want, named, fair)
            except Exception as exc:
                if not claimed:
                    raise
                self._cut_short(exc, claimed, named)
                break
            claimed.extend(got)
            if len(got) < want:
                break
        claimed.sort(key=lambda j: (-j.priority, j.run_at, j.created_at, j.id))
        return claimed

    def _cut_short(
        self, exc: Exception, claimed: Sequence[Job], named: list[Candidate] | None
    ) -> None:
        """A later round failed (throttled, say) after earlier ones committed: a claim of
        more jobs than one transaction holds (round_size, 98 under one limit) runs in
        rounds, each its own transaction. The jobs claimed so far are handed to the
        worker, not lost with a raise (each `running`, an attempt spent, their limit
        slots taken: raised, no worker ran them until their leases lapsed). The named
        jobs neither claimed nor held get their ids sent again, as the claim without a
        policy does (DynamoStore._claim_cut_short): the caller acknowledges the
        messages of the jobs it did not claim."""
        done = {job.id for job in claimed}
        unclaimed = [c.id for c in named or () if c.id not in done and c.id not in self.reported]
        self.store._claim_cut_short(exc, claimed, unclaimed, self.now)

    def _round(self, want: int, named: list[Candidate] | None, fair: bool) -> list[Job]:
        """Claim up to `want` jobs in one transaction, reading again after a conflict."""
        for attempt in range(TRANSACTION_ATTEMPTS):
            # The clock is read again for every attempt: a claim that lost a race (or
            # spent a round on the reaper, a backoff or an earlier round) commits later
            # than it began, and the starts it records must say when it took its jobs,
            # or a later claim's rate window misses them (as on SQLite and Postgres).
            self.now = self.store._now()
            state = self._read_state(fair, want)
            decision = self._decide(state, want, named, fair)
            if not decision.chosen:
                self._report(decision.holds)
                return []
            claimed = self._commit(state, decision, attempt)
            if claimed is not None:
                self._report(decision.holds)
                return claimed
        raise StoreUnavailable("DynamoDB limit state kept changing under this claim; try again")

    def _report(self, holds: list[Hold]) -> None:
        """Record each held job once per claim, and only for the attempt that counted;
        and each full limit (job id "") once per claim: kept by id alone, every "" after
        the first was dropped, and of two full limits /metrics showed one."""
        for hold in holds:
            if not hold.job_id:
                if hold.key not in self.reported_full:
                    self.reported_full.add(hold.key)
                    self.policy.holds.record(hold)
            elif hold.job_id not in self.reported:
                self.reported.add(hold.job_id)
                self.policy.holds.record(hold)

    # -- reading the limit state -----------------------------------------------------------
    def _read_state(self, fair: bool, want: int) -> State:
        keys = [limit_item_key(limit.key) for limit in self.policy.limits]
        if fair:
            keys.append(turns_key())
        found = self.store._batch_get(keys)
        items = {need_s(item, "pk"): item for item in found.values()}
        limits = {
            limit.key: LimitState.of(limit.key, items.get(LIMIT_PREFIX + limit.key))
            for limit in self.policy.limits
        }
        self._prune_run(limits, want)
        started: dict[str, int] = {}
        leaving: dict[str, list[tuple[float, int]]] = {}
        for limit in self.policy.rate_limits():
            assert limit.rate is not None
            state = limits[limit.key]
            window = micros_of(limit.rate.window)
            state.starts = [(at, count) for at, count in state.starts if at > self.now - window]
            self._restamp_starts(state)
            started[limit.key] = sum(count for _, count in state.starts)
            leaving[limit.key] = [((at + window - self.now) / MICRO, c) for at, c in state.starts]
        running = {key: len(limits[key].run) for key in self.policy.concurrency_keys()}
        turns = TurnsState.of(items.get(TURNS_PK)) if fair else None
        return State(limits, turns, running, started, leaving)

    def _restamp_starts(self, state: LimitState) -> None:
        """Starts dated more than STEP_BACK ahead of now were recorded before the wall
        clock stepped back: they count as starting now, not until the clock is back
        where it was. Written at once (not only with the claim's own starts), or every
        claim that takes nothing would date them now again and the window never pass."""
        ahead = self.now + micros_of(STEP_BACK)
        if not any(at > ahead for at, _ in state.starts):
            return
        starts = [(min(at, self.now), count) for at, count in state.starts]
        fields = {"run": s(dumps(state.run)), "starts": s(dumps([list(p) for p in starts]))}
        try:
            self.store.ddb.update_item(
                **versioned_update(self.store.table, limit_item_key(state.key), fields, state.ver)
            )
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "ConditionalCheckFailedException":
                raise
            # Written meanwhile: this claim's commit fails on the version and reads again.
        else:
            state.ver = (state.ver or 0) + 1
        state.starts = starts

    def _prune_run(self, limits: dict[str, LimitState], want: int) -> None:
        """Drop the ids no longer running from the `run` of every limit this claim could
        fill, or whose `run` has grown to RUN_PRUNE_AT ids; one consistent read of those
        jobs. A limit with room for `want` more even counting every id is otherwise left
        as it is: checking could not change what it admits."""
        by_key = self.policy.by_key()
        doubtful: list[LimitState] = []
        for key in self.policy.concurrency_keys():
            concurrency = by_key[key].concurrency
            assert concurrency is not None
            if len(limits[key].run) + want > min(concurrency, RUN_PRUNE_AT):
                doubtful.append(limits[key])
        ids = {job_id for state in doubtful for job_id in state.run}
        if not ids:
            return
        found = self.store._batch_get([job_key(i) for i in ids], ("state", "lease_exp"))
        live = {
            job_id_of(item)
            for item in found.values()
            if get_s(item, "state") == JobState.RUNNING.value
            and (get_n(item, "lease_exp") or 0) > self.now
        }
        for state in doubtful:
            state.run = [job_id for job_id in state.run if job_id in live]

    # -- deciding --------------------------------------------------------------------------
    def _decide(
        self, state: State, want: int, named: list[Candidate] | None, fair: bool
    ) -> Decision:
        """Admission and fair turns on a private hold log, so the holds of an attempt
        that is retried are not reported (they are reported once it commits)."""
        private = dataclasses.replace(self.policy, holds=HoldLog())
        with private.holds.watch() as holds:
            admission = Admission(private, state.running, state.started, state.leaving)
            self.full_queues, self.full_types = admission.full("queue"), admission.full("type")

            def admit(candidate: Candidate) -> bool:
                return admission.admit(candidate.id, candidate.queue, candidate.type)

            if fair:
                assert state.turns is not None
                passes, clock = state.turns.passes, state.turns.clock
                pick = fair_pick(self._tenants(), passes, clock, private, self._fetch, admit, want)
                return Decision(pick.chosen, admission, holds, pick)
            chosen: list[Candidate] = []
            source = iter(named) if named is not None else self._best_first(want)
            for candidate in source:
                if len(chosen) >= want:
                    break
                if candidate.id not in self.skip and admit(candidate):
                    chosen.append(candidate)
            return Decision(chosen, admission, holds)

    # -- candidates ------------------------------------------------------------------------
    def _named(self, ids: Sequence[str]) -> list[Candidate]:
        """Named jobs (an SQS batch), read consistently; the due waiting ones best first.

        A job whose lease ran out is reaped first; a message that came early is sent
        again for when its job is due, as the claim without a policy does."""
        wanted = list(dict.fromkeys(ids))
        read = self.store._batch_get([job_key(job_id) for job_id in wanted])
        found = {job_id_of(item): item for item in read.values()}
        expired = [
            item
            for item in found.values()
            if get_s(item, "state") == JobState.RUNNING.value
            and (get_n(item, "lease_exp") or 0) <= self.now
        ]
        if expired and self.store._reap(expired, self.now):
            again = self.store._batch_get([job_key(job_id_of(i)) for i in expired])
            found.update({job_id_of(i): i for i in again.values()})
        candidates: list[Candidate] = []
        early: list[tuple[str, int]] = []
        for job_id in wanted:
            item = found.get(job_id)
            if item is None or get_s(item, "state") not in WAITING:
                continue
            if self.store._buried_if_damaged(item) or not self._wanted(item):
                continue
            run_at = need_n(item, "run_at")
            if run_at > self.now:
                early.append((job_id, run_at))
                continue
            candidates.append(
                Candidate(
                    job_id,
                    need_s(item, "tenant"),
                    need_s(item, "queue"),
                    need_s(item, "type"),
                    need_s(item, "due_sk"),
                )
            )
        self.store._send(early, self.now)
        candidates.sort(key=lambda c: c.due_sk)
        return candidates

    def _wanted(self, entry: Mapping[str, AttributeValueTypeDef]) -> bool:
        return self.queues is None or need_s(entry, "queue") in self.queues

    def _due_run(self, index: str, hash_attr: str, hash_value: str, page: int) -> Iterator[Item]:
        """One index partition's due entries in due_sk order (best first).

        Within a priority, entries go by run_at: the first one not yet due means
        the rest of that priority is not due either, so the read jumps to the next
        priority instead of paging through delayed jobs. Due jobs of a full limit
        are filtered out (_filter), so a long run of them cannot use up EXAMINE."""
        after: str | None = None
        filtering = bool(self.full_queues or (self.full_types and index == GSI_TENANT_DUE))
        grow_to = FILTERED_PAGE if filtering else None  # a page may be mostly filtered out
        while True:
            expr = Expr()
            key = _key_after(expr, hash_attr, hash_value, "due_sk", after)
            filter_ = self._filter(expr, index)
            jumped = False
            for entry in self.store._query(index, expr, key, filter_, page=page, grow_to=grow_to):
                if need_n(entry, "run_at") > self.now:
                    priority = need_s(entry, "due_sk").split("#", 1)[0]
                    after, jumped = priority + "#~", True  # '~' sorts after every digit
                    break
                yield entry
            if not jumped:
                return

    def _filter(self, expr: Expr, index: str) -> str | None:
        """The queues asked for, less the due jobs of limits full before the decision
        (entries not yet due still come back: they end their priority's read). Only
        `tenant_due` holds the type; `due` leaves full types to the claim's admission."""
        parts: list[str] = []
        if self.queues is not None:
            parts.append(expr.one_of("queue", [s(q) for q in sorted(self.queues)]))
        full = []
        if self.full_queues:
            full.append(expr.one_of("queue", [s(q) for q in self.full_queues[:FILTER_MOST]]))
        if self.full_types and index == GSI_TENANT_DUE:
            full.append(expr.one_of("type", [s(t) for t in self.full_types[:FILTER_MOST]]))
        if full:
            due = f"{expr.name('run_at')} > {expr.value(n(self.now))}"
            parts.append(f"({due} OR NOT ({' OR '.join(full)}))")
        return " AND ".join(parts) or None

    def _best_first(self, want: int) -> Iterator[Candidate]:
        """Due jobs of every tenant, best first, from the due index; types (which the
        index does not hold) from the store's static cache, read in blocks when missing.

        Index pages are generous (index entries are small); the blocks of statics,
        whole-item reads, start at what the claim wants and double while jobs are held.

        The due index has no type, so it hands back the due jobs of a type whose limit
        is full, and a run of more than EXAMINE of them hid every job behind it for as
        long as the limit stayed full. When the read ends at EXAMINE with a type full,
        it goes on from each waiting tenant's `tenant_due` (a query per tenant, as fair
        turns cost), without the full types' jobs."""
        given: set[str] = set()
        examined = 0

        def counted(entries: Iterator[Item]) -> Iterator[Item]:
            nonlocal examined
            for entry in entries:
                examined += 1
                yield entry

        page = min(1000, 4 * want + 50)
        runs = [
            self._due_run(GSI_DUE, "due_pk", due_partition(shard), page)
            for shard in self.store._shards()
        ]
        merged = heapq.merge(*runs, key=lambda e: need_s(e, "due_sk"))
        entries = (
            e for e in counted(itertools.islice(merged, EXAMINE)) if job_id_of(e) not in self.skip
        )
        size = min(BATCH_GET, want + 2)
        while block := list(itertools.islice(entries, size)):
            statics = self.store._statics_for([job_id_of(e) for e in block])
            for entry in block:
                st = statics.get(job_id_of(entry))
                if st is not None:
                    given.add(st.id)
                    yield Candidate(st.id, st.tenant, st.queue, st.type, need_s(entry, "due_sk"))
            size = min(BATCH_GET, 2 * size)
        if examined < EXAMINE or not self.full_types:
            return
        try:
            tenants = sorted(self._tenants())
        except StoreNotMigrated:
            return  # a table made before the fair indexes: the due index alone, as before
        runs_by_tenant = [self._tenant_run(tenant, EXAMINE, TENANT_PAGE) for tenant in tenants]
        merged_by_tenant = heapq.merge(*runs_by_tenant, key=lambda c: c.due_sk)
        fresh = (c for c in merged_by_tenant if c.id not in given)
        yield from itertools.islice(fresh, EXAMINE)

    def _tenants(self) -> set[str]:
        """Tenants with waiting jobs: per shard, a page of due_tenants at a time, each
        next query starting past the last tenant seen, so a tenant with 50,000 waiting
        jobs costs one query, not 50,000 entries."""
        found: set[str] = set()
        for shard in self.store._shards():
            after: str | None = None
            while True:
                expr = Expr()
                key = _key_after(expr, "due_pk", due_partition(shard), "tn_pk", after)
                page = list(
                    itertools.islice(
                        self._index_query(GSI_DUE_TENANTS, expr, key, DISCOVERY_PAGE),
                        DISCOVERY_PAGE,
                    )
                )
                # tn_pk is "<tenant>#<shard>", the shard the same as due_pk's.
                found.update(need_s(e, "tn_pk").rsplit("#", 1)[0] for e in page)
                if len(page) < DISCOVERY_PAGE:
                    break
                after = need_s(page[-1], "tn_pk")
        return found

    def _index_query(self, index: str, expr: Expr, key: str, page: int) -> Iterator[Item]:
        """A query of one of the fair indexes, which a table made before them lacks."""
        try:
            yield from self.store._query(index, expr, key, page=page)
        except ClientError as exc:
            message = str(exc.response.get("Error", {}).get("Message", ""))
            if "index" in message.lower():
                raise StoreNotMigrated(
                    f"fair turns need the table's {GSI_TENANT_DUE} and {GSI_DUE_TENANTS}"
                    " indexes: deploy infra/",
                    {"index": index},
                ) from exc
            raise

    def _fetch(self, tenant: str) -> Sequence[Candidate]:
        """One tenant's due jobs, best first, read only as fair_pick takes them (it only
        iterates what it is given, once), so a tenant's turn costs a page, not its backlog."""
        return cast("Sequence[Candidate]", self._tenant_run(tenant, EXAMINE_PER_TENANT))

    def _tenant_run(
        self, tenant: str, examine: int, page: int = TENANT_PAGE
    ) -> Iterator[Candidate]:
        """One tenant's due jobs best first, at most `examine` entries of them, lazily."""
        runs = [
            self._due_run(GSI_TENANT_DUE, "tn_pk", tenant_partition(tenant, shard), page)
            for shard in self.store._shards()
        ]
        merged = heapq.merge(*runs, key=lambda e: need_s(e, "due_sk"))
        return (
            Candidate(
                job_id_of(e), tenant, need_s(e, "queue"), need_s(e, "type"), need_s(e, "due_sk")
            )
            for e in itertools.islice(merged, examine)
            if job_id_of(e) not in self.skip and self._entry_readable(e)
        )

    def _entry_readable(self, entry: Mapping[str, AttributeValueTypeDef]) -> bool:
        """An index entry without the queue or type a turn needs comes from a damaged
        item: buried (made dead) from its whole record, and skipped by this claim."""
        if get_s(entry, "queue") is not None and get_s(entry, "type") is not None:
            return True
        self.skip.add(job_id_of(entry))
        self._bury_damaged_chosen([job_id_of(entry)])
        return False

    # -- committing ------------------------------------------------------------------------
    def _commit(self, state: State, decision: Decision, attempt: int) -> list[Job] | None:
        """The claims and the state they change, in one transaction; the claimed jobs, or
        None when it was refused (jobs taken meanwhile are skipped from then on).

        The chosen jobs are read (consistently) before the write, and each claim is
        conditional on the version read, so the claimed records are those items with
        the claim's changes applied and nothing is read after the commit: a read
        after it that failed left its jobs `running` with an attempt spent and no
        worker to run them until their leases lapsed (stop 42). A failure now comes
        before the write, when it has claimed nothing."""
        items = self._read_chosen(decision.chosen)
        if items is None:
            return None
        actions: list[TransactWriteItemTypeDef] = []
        updated: list[Item] = []
        for candidate in decision.chosen:
            action, new_item = self._claim_action(candidate, items[candidate.id])
            actions.append(action)
            updated.append(new_item)
        actions.extend(self._state_actions(state, decision))
        try:
            self.store.ddb.transact_write_items(TransactItems=actions)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code")
            reasons = cast("list[dict[str, Any]]", exc.response.get("CancellationReasons", []))
            codes = [str(r.get("Code")) for r in reasons]
            if code == "ValidationException" or "ValidationError" in codes:
                # A chosen job's item is in a shape the claim's update cannot apply to
                # (attempts or ver not a number): bury it, then claim again without it.
                if not self._bury_damaged_chosen([c.id for c in decision.chosen]):
                    raise
                return None
            if code != "TransactionCanceledException":
                raise
            taken = [
                c.id
                for c, code in zip(decision.chosen, codes, strict=False)
                if code == "ConditionalCheckFailed"
            ]
            self.skip.update(taken)
            if "ConditionalCheckFailed" not in codes:
                self.store._tx.backoff(attempt)  # a conflict with a transaction in flight
            return None
        self.skip.update(c.id for c in decision.chosen)
        jobs = (self.store._claimed_job(item) for item in updated)
        return [job for job in jobs if job is not None]  # None: settled, payload unreadable

    def _read_chosen(self, chosen: Sequence[Candidate]) -> dict[str, Item] | None:
        """The chosen jobs' items, read consistently; None when one of them can no longer
        be claimed (gone, taken, not due, not in the claim's queues, or in a shape no
        worker could run, which is buried): skipped from now on, the round decides
        again without it (its limit room and fair turn go to another job)."""
        found = self.store._batch_get([job_key(c.id) for c in chosen])
        items = {job_id_of(item): item for item in found.values()}
        gone: list[str] = []
        for candidate in chosen:
            item = items.get(candidate.id)
            if (
                item is None
                or get_s(item, "state") not in WAITING
                or self.store._buried_if_damaged(item)
                or not self._wanted(item)
                or need_n(item, "run_at") > self.now
            ):
                gone.append(candidate.id)
        if gone:
            self.skip.update(gone)
            return None
        return items

    def _bury_damaged_chosen(self, ids: Sequence[str]) -> bool:
        """Bury those of these jobs no worker could run, skipped from now on; True if any."""
        buried = self.store._bury_damaged_ids(ids)
        self.skip.update(buried)
        return bool(buried)

    def _claim_action(
        self, candidate: Candidate, item: Mapping[str, AttributeValueTypeDef]
    ) -> tuple[TransactWriteItemTypeDef, Item]:
        """The same update a claim without a policy writes, conditional on the job being
        as read (its version) and so still due and waiting (an index may lag); and the
        item as that update leaves it."""
        store = self.store
        expr, new_item = store._claim_update(
            candidate.id, item, self.now, self.expires, self.started
        )
        condition = (
            f"{expr.name('ver')} = {expr.value(n(need_n(item, 'ver')))} AND "
            f"{expr.one_of('state', [s(w) for w in WAITING])} AND "
            f"{expr.name('run_at')} <= {expr.value(n(self.now))}"
        )
        if self.queues is not None:
            condition += " AND " + expr.one_of("queue", [s(q) for q in sorted(self.queues)])
        return store._update(candidate.id, expr, condition), new_item

    def _state_actions(self, state: State, decision: Decision) -> list[TransactWriteItemTypeDef]:
        """Versioned writes of each limit item the claim took room from, and of the turns."""
        by_key, table = self.policy.by_key(), self.store.table
        actions: list[TransactWriteItemTypeDef] = []
        for key, taken in sorted(decision.admission.taken.items()):
            if taken <= 0:
                continue
            limit, limit_state = by_key[key], state.limits[key]
            run: list[str] = []
            if limit.concurrency is not None:
                mine = [c.id for c in decision.chosen if key in limit_keys(c.queue, c.type)]
                run = [*limit_state.run, *mine]
            starts: list[tuple[int, int]] = []
            if limit.rate is not None:
                starts = [*limit_state.starts, (self.now, taken)]
            fields = {"run": s(dumps(run)), "starts": s(dumps([list(p) for p in starts]))}
            update = versioned_update(table, limit_item_key(key), fields, limit_state.ver)
            actions.append({"Update": update})
        if decision.pick is not None and state.turns is not None:
            clock = decision.pick.clock
            passes = {**state.turns.passes, **decision.pick.passes}
            # A pass at or behind the clock counts as the clock (fair_pick joins it
            # there), so only passes ahead of it need keeping.
            ahead = {tenant: p for tenant, p in sorted(passes.items()) if p > clock}
            fields = {"turns": s(dumps({"clock": clock, "passes": ahead}))}
            update = versioned_update(table, turns_key(), fields, state.turns.ver)
            actions.append({"Update": update})
        return actions


def _key_after(
    expr: Expr, hash_attr: str, hash_value: str, range_attr: str, after: str | None
) -> str:
    """A key condition on one index partition, past `after` in its sort key when given."""
    key = f"{expr.name(hash_attr)} = {expr.value(s(hash_value))}"
    if after is not None:
        key += f" AND {expr.name(range_attr)} > {expr.value(s(after))}"
    return key


def take_tokens(store: DynamoStore, key: str, rate: float, burst: int, cost: int) -> float:
    """`DynamoStore.take_tokens`: a token bucket in one item, read consistently and
    written only when tokens are taken, conditional on the version read (another
    process that took tokens meanwhile makes this one read again). A refusal writes
    nothing: refilling later from the older reading gives the same tokens."""
    for attempt in range(BUCKET_ATTEMPTS):
        now = store._now()
        item = store.ddb.get_item(
            TableName=store.table, Key=bucket_key(key), ConsistentRead=True
        ).get("Item")
        tokens, at, ver = float(burst), now, None
        if item is not None:
            tokens, at, ver = float(need_s(item, "tokens")), need_n(item, "at"), need_n(item, "ver")
        # Never back in time, unless the stamp is from before the clock stepped back.
        elapsed, stamp = bucket_stamp(at / MICRO, now / MICRO)
        restamped = stamp < at / MICRO  # stamped at now, behind the stamp read
        left, wait = take(refill(tokens, elapsed, rate, burst), rate, cost)
        if wait > 0 and not restamped:
            return wait
        # A refusal that restamps is written too: left at the old stamp, every later
        # take would refill nothing from it until the clock is back where it was.
        full_again = now // MICRO + int((burst - left) / rate) + 1
        fields = {
            "tokens": s(repr(left)),
            "at": n(now if restamped else max(at, now)),  # bucket_stamp's, in micros
            "expires_at": n(full_again + BUCKET_KEEP_SECONDS),  # TTL: a full bucket is no item
        }
        try:
            store.ddb.update_item(**versioned_update(store.table, bucket_key(key), fields, ver))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "ConditionalCheckFailedException":
                raise
            store._tx.backoff(attempt)
            continue
        return wait
    raise StoreUnavailable("a token bucket kept changing under this take; try again")


def claim_with_policy(
    store: DynamoStore,
    policy: ClaimPolicy,
    limit: int,
    now: int,
    expires: int,
    queues: Sequence[str] | None,
    ids: Sequence[str] | None,
    started: bool = True,
) -> list[Job]:
    """`DynamoStore.claim` with an active policy (see the module docstring)."""
    return PolicyClaim(store, policy, now, expires, queues, started).run(limit, ids)


__all__ = ["claim_with_policy", "take_tokens"]

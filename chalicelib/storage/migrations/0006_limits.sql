-- Execution limits and fair turns (issue 14; chalicelib/limits.py).
--
-- Only claims that carry a policy read or write these tables, and they do it
-- under one transaction-level advisory lock per schema, so the checks and the
-- claim are one atomic step across every worker. Claims without a policy never
-- touch them.

-- Starts recorded per rate-limited key ("queue:<name>", "type:<name>"). A claim
-- starts all its jobs at one instant, so it adds one row per key (n jobs), not
-- one per job; claims sum n over the starts after now - window and delete older ones.
CREATE TABLE limit_starts (
    key text COLLATE "C" NOT NULL,
    at  timestamptz NOT NULL,
    n   integer NOT NULL,
    PRIMARY KEY (key, at)
);

-- Fair turns: each tenant's stride pass (one small row per tenant that took a
-- turn), and the pass of the last turn taken, where a newcomer joins.
CREATE TABLE fair_passes (
    tenant text COLLATE "C" PRIMARY KEY,
    pass   double precision NOT NULL
);

CREATE TABLE fair_clock (
    one   boolean PRIMARY KEY DEFAULT true CHECK (one),
    clock double precision NOT NULL
);
INSERT INTO fair_clock (one, clock) VALUES (true, 0);

-- Due jobs per (tenant, queue, type), best first: a fair turn reads only its
-- tenant's ranges, and a claim skips a queue or type whose limit is full without
-- reading its jobs, however big either backlog. Priority is kept negated (as a
-- bigint, so no value overflows) rather than DESC: jobs_due cannot give that
-- order, so the planner never walks jobs_due with a filter in its place.
-- Only waiting jobs are in it, so a claim (queued -> running) and a finish add
-- nothing to it; an enqueue adds one entry.
CREATE INDEX jobs_fair ON jobs (tenant, queue, type, (-priority::bigint), run_at, created_at, id)
    WHERE state IN ('queued', 'retrying');

-- Token buckets shared by every process (JobStore.take_tokens: per-tenant
-- enqueue rates). One row per key: the tokens left at `at`; a take locks the
-- row, refills by the time since `at` and writes it back.
CREATE TABLE token_buckets (
    key    text COLLATE "C" PRIMARY KEY,
    tokens double precision NOT NULL,
    at     timestamptz NOT NULL
);

-- Spool on Postgres: the jobs table, its indexes and the system-wide counters.
--
-- Times are timestamptz (integer microseconds inside Postgres, so comparisons
-- are exact). Text columns use the "C" collation: byte order equals code point
-- order, which is the order the contract (and Python) uses for ids and cursors,
-- and it is the fastest collation to compare.

CREATE TABLE jobs (
    id               text COLLATE "C" PRIMARY KEY,
    tenant           text COLLATE "C" NOT NULL,
    type             text COLLATE "C" NOT NULL,
    queue            text COLLATE "C" NOT NULL,
    priority         integer NOT NULL,
    payload          text NOT NULL,            -- JSON, kept as written
    state            text COLLATE "C" NOT NULL
        CHECK (state IN ('queued', 'running', 'retrying', 'succeeded', 'dead', 'cancelled')),
    attempts         integer NOT NULL DEFAULT 0,
    max_attempts     integer NOT NULL,
    run_at           timestamptz NOT NULL,
    lease_token      text COLLATE "C",
    lease_expires_at timestamptz,
    result           text,                     -- JSON
    last_error       text,
    idempotency_key  text COLLATE "C",
    created_at       timestamptz NOT NULL,
    updated_at       timestamptz NOT NULL,
    started_at       timestamptz,
    finished_at      timestamptz
);

-- A queue table churns: every job is inserted, updated twice and later purged.
-- Vacuum early so dead index entries do not pile up in front of the due jobs.
ALTER TABLE jobs SET (
    autovacuum_vacuum_scale_factor = 0.02,
    autovacuum_vacuum_insert_scale_factor = 0.05,
    autovacuum_analyze_scale_factor = 0.05,
    autovacuum_vacuum_cost_delay = 1
);

-- Claims walk this index in claim order and stop after N unlocked rows; only
-- waiting jobs are in it, so millions of finished jobs cost nothing here.
CREATE INDEX jobs_due ON jobs (priority DESC, run_at, created_at, id)
    WHERE state IN ('queued', 'retrying');
-- next_due_at: the earliest waiting job, one index endpoint.
CREATE INDEX jobs_waiting_run_at ON jobs (run_at) WHERE state IN ('queued', 'retrying');
-- Reaping expired leases and next_due_at for leases: only running jobs.
CREATE INDEX jobs_leases ON jobs (lease_expires_at) WHERE state = 'running';
CREATE UNIQUE INDEX jobs_idempotency ON jobs (tenant, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
-- Listing a tenant's jobs in (created_at, id) order, the cursor order.
CREATE INDEX jobs_by_tenant ON jobs (tenant, created_at, id);
-- The dead-letter list stays fast however many jobs succeeded.
CREATE INDEX jobs_dead ON jobs (tenant, created_at, id) WHERE state = 'dead';
-- Purge takes the oldest finished jobs first, in bounded batches.
CREATE INDEX jobs_finished ON jobs (finished_at) WHERE finished_at IS NOT NULL;

-- Counters are spread over a few shards per key, so concurrent workers that
-- finish jobs of the same type do not queue behind one row lock; readers sum
-- the shards.
CREATE TABLE counters (
    queue text COLLATE "C" NOT NULL,
    type  text COLLATE "C" NOT NULL,
    event text COLLATE "C" NOT NULL,
    shard smallint NOT NULL,
    n     bigint NOT NULL,
    PRIMARY KEY (queue, type, event, shard)
);

-- A /metrics scrape that costs the named queues, not every queue name ever used.
--
-- Tenants name queues freely and every name keeps its counter rows for good, so a
-- scrape that ranked queues by summing `counters` read every row ever written (about
-- 5 us a name: a second at 200,000 names). Keeping a per-queue volume in the
-- enqueue's own transaction would make every enqueue into one queue wait for the
-- previous one's commit (that is why the counters are sharded). Instead:
--
-- - every change of a `counters` or `job_counts` row also adds its delta to the row's
--   own `pending` and marks it `dirty`, in the same upsert (or, for a writer that
--   does not, a process of the previous release, a row trigger): no row is written
--   that the writer did not already lock;
-- - a scrape folds the dirty rows (spool_fold_counters, spool_fold_job_counts): under
--   their row locks it moves `pending` into the summaries and zeroes it, so for every
--   row n - pending is the part already in the summaries, which hold exactly those:
--     queue_volume(queue)            jobs ever enqueued, ranked by an index;
--     counter_totals(type, event)    every queue's counters summed;
--     queue_state_counts(queue, state), state_totals(state)   the same for job_counts;
-- - in one snapshot, a scrape reads the ranked names off queue_volume's index, the
--   named queues' counters as sum(n - pending) and counts off queue_state_counts, and
--   `_other` as the totals less those: exact in that snapshot, whatever commits
--   beside it.
--
-- A scrape's work is the named queues' rows, the rows changed since the last fold,
-- and a few totals: never every name ever used.

ALTER TABLE counters
    ADD COLUMN pending bigint NOT NULL DEFAULT 0,
    ADD COLUMN folded bigint NOT NULL DEFAULT 0,  -- only the fold's hand-over
    ADD COLUMN dirty boolean NOT NULL DEFAULT false;
ALTER TABLE job_counts
    ADD COLUMN pending bigint NOT NULL DEFAULT 0,
    ADD COLUMN folded bigint NOT NULL DEFAULT 0,  -- only the fold's hand-over
    ADD COLUMN dirty boolean NOT NULL DEFAULT false;
-- Only the rows changed since the last fold; a row that stays dirty is updated HOT.
CREATE INDEX counters_dirty ON counters (queue, type, event, shard) WHERE dirty;
CREATE INDEX job_counts_dirty ON job_counts (tenant, queue, state, shard) WHERE dirty;

CREATE TABLE queue_volume (
    queue    text COLLATE "C" PRIMARY KEY,
    enqueued bigint NOT NULL
);
-- The busiest N are the index's first N entries (ties by name, code point order).
CREATE INDEX queue_volume_rank ON queue_volume (enqueued DESC, queue);
CREATE TABLE counter_totals (
    type  text COLLATE "C" NOT NULL,
    event text COLLATE "C" NOT NULL,
    n     bigint NOT NULL,
    PRIMARY KEY (type, event)
);
CREATE TABLE queue_state_counts (
    queue text COLLATE "C" NOT NULL,
    state text COLLATE "C" NOT NULL,
    n     bigint NOT NULL,
    PRIMARY KEY (queue, state)
);
CREATE TABLE state_totals (
    state text COLLATE "C" PRIMARY KEY,
    n     bigint NOT NULL
);

-- Spool's own writers keep `pending` and `dirty` in the statement that changes `n`
-- (postgres.UPSERT_COUNTERS; the job_counts functions of 0004, replaced below), so
-- the usual write calls no function. Any other writer (a process of the previous
-- release, SQL by hand) leaves them behind, and the triggers below, whose WHEN is
-- checked without calling them, catch it up.
CREATE FUNCTION spool_pending_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.pending := NEW.n;
    NEW.dirty := true;
    RETURN NEW;
END $$;

CREATE FUNCTION spool_pending_updated() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.pending := OLD.pending + NEW.n - OLD.n;
    NEW.dirty := true;
    RETURN NEW;
END $$;

CREATE TRIGGER counters_pending_insert BEFORE INSERT ON counters FOR EACH ROW
    WHEN (NEW.pending IS DISTINCT FROM NEW.n OR NOT NEW.dirty)
    EXECUTE FUNCTION spool_pending_inserted();
CREATE TRIGGER counters_pending_update BEFORE UPDATE OF n ON counters FOR EACH ROW
    WHEN (NEW.pending - OLD.pending IS DISTINCT FROM NEW.n - OLD.n
        OR (NEW.n IS DISTINCT FROM OLD.n AND NOT NEW.dirty))
    EXECUTE FUNCTION spool_pending_updated();
CREATE TRIGGER job_counts_pending_insert BEFORE INSERT ON job_counts FOR EACH ROW
    WHEN (NEW.pending IS DISTINCT FROM NEW.n OR NOT NEW.dirty)
    EXECUTE FUNCTION spool_pending_inserted();
CREATE TRIGGER job_counts_pending_update BEFORE UPDATE OF n ON job_counts FOR EACH ROW
    WHEN (NEW.pending - OLD.pending IS DISTINCT FROM NEW.n - OLD.n
        OR (NEW.n IS DISTINCT FROM OLD.n AND NOT NEW.dirty))
    EXECUTE FUNCTION spool_pending_updated();

-- 0004's job_counts upserts, keeping pending and dirty as well.
CREATE OR REPLACE FUNCTION spool_jobs_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO job_counts (tenant, queue, state, shard, n, pending, dirty)
    SELECT tenant, queue, state, pg_backend_pid() % 16, count(*), count(*), true FROM new_rows
    GROUP BY tenant, queue, state ORDER BY tenant, queue, state
    ON CONFLICT (tenant, queue, state, shard) DO UPDATE SET n = job_counts.n + excluded.n,
        pending = job_counts.pending + excluded.n, dirty = true;
    RETURN NULL;
END $$;

CREATE OR REPLACE FUNCTION spool_jobs_deleted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO job_counts (tenant, queue, state, shard, n, pending, dirty)
    SELECT tenant, queue, state, pg_backend_pid() % 16, -count(*), -count(*), true FROM old_rows
    GROUP BY tenant, queue, state ORDER BY tenant, queue, state
    ON CONFLICT (tenant, queue, state, shard) DO UPDATE SET n = job_counts.n + excluded.n,
        pending = job_counts.pending + excluded.n, dirty = true;
    RETURN NULL;
END $$;

-- One pass over the moved rows feeds both tables; a statement that moved nothing
-- (a claim's reap with no expired lease, a lease extension) returns at once.
CREATE OR REPLACE FUNCTION spool_jobs_updated() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM new_rows) THEN
        RETURN NULL;
    END IF;
    WITH moved AS MATERIALIZED (
        SELECT o.tenant, o.queue, o.state AS was, n.state AS now_in, n.updated_at
        FROM old_rows o JOIN new_rows n ON n.id = o.id WHERE o.state <> n.state
    ), counted AS (
        INSERT INTO job_counts (tenant, queue, state, shard, n, pending, dirty)
        SELECT tenant, queue, state, pg_backend_pid() % 16, sum(d), sum(d), true FROM (
            SELECT tenant, queue, was AS state, -1 AS d FROM moved
            UNION ALL
            SELECT tenant, queue, now_in, 1 FROM moved
        ) deltas
        GROUP BY tenant, queue, state HAVING sum(d) <> 0 ORDER BY tenant, queue, state
        ON CONFLICT (tenant, queue, state, shard) DO UPDATE SET n = job_counts.n + excluded.n,
            pending = job_counts.pending + excluded.n, dirty = true
    )
    -- An attempt ended: running -> succeeded, retrying or dead (a finish or a reap).
    INSERT INTO job_minutes (minute, tenant, queue, shard, succeeded, failed)
    SELECT to_timestamp(floor(extract(epoch FROM updated_at) / 60) * 60), tenant, queue,
        pg_backend_pid() % 16,
        count(*) FILTER (WHERE now_in = 'succeeded'),
        count(*) FILTER (WHERE now_in <> 'succeeded')
    FROM moved
    WHERE was = 'running' AND now_in IN ('succeeded', 'retrying', 'dead')
    GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
    ON CONFLICT (minute, tenant, queue, shard) DO UPDATE SET
        succeeded = job_minutes.succeeded + excluded.succeeded,
        failed = job_minutes.failed + excluded.failed;
    RETURN NULL;
END $$;

-- Move every dirty row's pending into the summaries. One UPDATE per table clears
-- the rows and hands their pending over through `folded` (SET reads the row's
-- values before the update): it waits for a row a writer holds and then takes that
-- row's latest pending, so each delta is folded exactly once; a row changed after
-- is dirty again for the next fold; a second fold beside this one finds the rows
-- clean once this one commits. The rows are found and locked in key order (the
-- order every writer's upsert locks them in) through the partial indexes only:
-- with stale statistics (a new table, a burst of new names since the last ANALYZE)
-- the planner would read every row instead, the cost this migration removes.
CREATE FUNCTION spool_fold_counters() RETURNS void LANGUAGE plpgsql
SET enable_seqscan = off SET enable_bitmapscan = off AS $$
BEGIN
    WITH c AS (
        UPDATE counters SET folded = pending, pending = 0, dirty = false WHERE dirty
        RETURNING queue, type, event, folded
    ), totals AS (
        INSERT INTO counter_totals (type, event, n)
        SELECT type, event, sum(folded) FROM c GROUP BY type, event ORDER BY type, event
        ON CONFLICT (type, event) DO UPDATE SET n = counter_totals.n + excluded.n
    )
    -- Every queue with a counter row gets a volume row: a queue is known from its first.
    INSERT INTO queue_volume (queue, enqueued)
    SELECT queue, coalesce(sum(folded) FILTER (WHERE event = 'enqueued'), 0) FROM c
    GROUP BY queue ORDER BY queue
    ON CONFLICT (queue) DO UPDATE SET enqueued = queue_volume.enqueued + excluded.enqueued;
END $$;

-- The same for job_counts, called in a transaction of its own: a fold never holds
-- locks on rows of both tables, so it cannot deadlock with a writer that locks
-- them in the other order (a claim's counts before its reaped leases' counters).
CREATE FUNCTION spool_fold_job_counts() RETURNS void LANGUAGE plpgsql
SET enable_seqscan = off SET enable_bitmapscan = off AS $$
BEGIN
    WITH c AS (
        UPDATE job_counts SET folded = pending, pending = 0, dirty = false WHERE dirty
        RETURNING queue, state, folded
    ), totals AS (
        INSERT INTO state_totals (state, n)
        SELECT state, sum(folded) FROM c GROUP BY state ORDER BY state
        ON CONFLICT (state) DO UPDATE SET n = state_totals.n + excluded.n
    )
    INSERT INTO queue_state_counts (queue, state, n)
    SELECT queue, state, sum(folded) FROM c GROUP BY queue, state ORDER BY queue, state
    ON CONFLICT (queue, state) DO UPDATE SET n = queue_state_counts.n + excluded.n;
END $$;

-- The rows already there, summed once (pending is 0 in each: all of n is folded).
-- ALTER TABLE above locked out writers until this migration commits, so nothing is
-- counted twice or missed.
INSERT INTO queue_volume (queue, enqueued)
SELECT queue, coalesce(sum(n) FILTER (WHERE event = 'enqueued'), 0) FROM counters GROUP BY queue;
INSERT INTO counter_totals (type, event, n)
SELECT type, event, sum(n) FROM counters GROUP BY type, event;
INSERT INTO queue_state_counts (queue, state, n)
SELECT queue, state, sum(n) FROM job_counts GROUP BY queue, state;
INSERT INTO state_totals (state, n)
SELECT state, sum(n) FROM job_counts GROUP BY state;

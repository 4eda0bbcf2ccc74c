-- The dashboard's reads without counting jobs (issue 12).
--
-- job_counts: jobs per (tenant, queue, state), spread over shards (the writing
-- backend's pid mod 16) so concurrent workers rarely wait on one row; readers
-- sum the shards. job_minutes: attempts that ended per (minute, tenant, queue),
-- succeeded and failed, for the last hour's chart. Statement-level triggers with
-- transition tables keep both in the same transaction as the statement that
-- moved the jobs, one upsert per group per statement (a claim of 100 jobs is
-- one row, not 100), whichever code path wrote it.

CREATE TABLE job_counts (
    tenant text COLLATE "C" NOT NULL,
    queue  text COLLATE "C" NOT NULL,
    state  text COLLATE "C" NOT NULL,
    shard  smallint NOT NULL,
    n      bigint NOT NULL,
    PRIMARY KEY (tenant, queue, state, shard)
);

CREATE TABLE job_minutes (
    minute    timestamptz NOT NULL,
    tenant    text COLLATE "C" NOT NULL,
    queue     text COLLATE "C" NOT NULL,
    shard     smallint NOT NULL,
    succeeded bigint NOT NULL,
    failed    bigint NOT NULL,
    PRIMARY KEY (minute, tenant, queue, shard)
);

CREATE FUNCTION spool_jobs_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO job_counts (tenant, queue, state, shard, n)
    SELECT tenant, queue, state, pg_backend_pid() % 16, count(*) FROM new_rows
    GROUP BY tenant, queue, state ORDER BY tenant, queue, state
    ON CONFLICT (tenant, queue, state, shard) DO UPDATE SET n = job_counts.n + excluded.n;
    RETURN NULL;
END $$;

CREATE FUNCTION spool_jobs_deleted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO job_counts (tenant, queue, state, shard, n)
    SELECT tenant, queue, state, pg_backend_pid() % 16, -count(*) FROM old_rows
    GROUP BY tenant, queue, state ORDER BY tenant, queue, state
    ON CONFLICT (tenant, queue, state, shard) DO UPDATE SET n = job_counts.n + excluded.n;
    RETURN NULL;
END $$;

-- One pass over the moved rows feeds both tables; a statement that moved nothing
-- (a claim's reap with no expired lease, a lease extension) returns at once.
CREATE FUNCTION spool_jobs_updated() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM new_rows) THEN
        RETURN NULL;
    END IF;
    WITH moved AS MATERIALIZED (
        SELECT o.tenant, o.queue, o.state AS was, n.state AS now_in, n.updated_at
        FROM old_rows o JOIN new_rows n ON n.id = o.id WHERE o.state <> n.state
    ), counted AS (
        INSERT INTO job_counts (tenant, queue, state, shard, n)
        SELECT tenant, queue, state, pg_backend_pid() % 16, sum(d) FROM (
            SELECT tenant, queue, was AS state, -1 AS d FROM moved
            UNION ALL
            SELECT tenant, queue, now_in, 1 FROM moved
        ) deltas
        GROUP BY tenant, queue, state HAVING sum(d) <> 0 ORDER BY tenant, queue, state
        ON CONFLICT (tenant, queue, state, shard) DO UPDATE SET n = job_counts.n + excluded.n
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

CREATE TRIGGER jobs_counted_insert AFTER INSERT ON jobs
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION spool_jobs_inserted();
CREATE TRIGGER jobs_counted_delete AFTER DELETE ON jobs
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION spool_jobs_deleted();
CREATE TRIGGER jobs_counted_update AFTER UPDATE ON jobs
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION spool_jobs_updated();

-- The jobs already there, counted once. CREATE TRIGGER above locked out writers
-- until this migration commits, so nothing is counted twice or missed.
INSERT INTO job_counts (tenant, queue, state, shard, n)
SELECT tenant, queue, state, 0, count(*) FROM jobs GROUP BY tenant, queue, state;

-- Lists filtered by state, and a tenant's oldest due job per queue, by index.
CREATE INDEX jobs_by_state ON jobs (tenant, state, created_at, id);
CREATE INDEX jobs_waiting_by_queue ON jobs (tenant, queue, run_at)
    WHERE state IN ('queued', 'retrying');

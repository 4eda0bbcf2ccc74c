-- A job deleted by any writer moves its tenant's cache epoch (JobStore.cache_epoch).
--
-- Spool's own deletes (purge, discard) bumped the epochs in their statements, so a
-- `DELETE FROM jobs` by hand, the usual clean-up of a self-hosted store, moved no
-- epoch: `GET /status` answered 200 "succeeded" from the result cache for the job's
-- whole TTL after the row was gone (TRUNCATE was already seen: it gives the table a
-- new file, EPOCH_SQL). The delete trigger that keeps the dashboard's counts now
-- bumps the epochs too, for every writer, and Spool's statements no longer do it
-- themselves. It runs at the end of the deleting statement, after its rows were
-- locked, and takes the epoch rows in tenant order, as every bump does: no deadlock.
--
-- `SET search_path FROM CURRENT` keeps the search path the store migrated with, so
-- the trigger functions that write other tables (job_counts, job_minutes,
-- tenant_epochs) find them beside the jobs they were called for when a statement
-- names `<schema>.jobs` under another search path, as psql's default one. Before,
-- every such INSERT, UPDATE or DELETE by hand failed: relation "job_counts" does not
-- exist. Spool's own sessions use that same search path, so their statements keep
-- their cached plans; the setting costs a trigger call a few microseconds.

CREATE OR REPLACE FUNCTION spool_jobs_deleted() RETURNS trigger LANGUAGE plpgsql
SET search_path FROM CURRENT AS $$
BEGIN
    INSERT INTO job_counts (tenant, queue, state, shard, n, pending, dirty)
    SELECT tenant, queue, state, pg_backend_pid() % 16, -count(*), -count(*), true FROM old_rows
    GROUP BY tenant, queue, state ORDER BY tenant, queue, state
    ON CONFLICT (tenant, queue, state, shard) DO UPDATE SET n = job_counts.n + excluded.n,
        pending = job_counts.pending + excluded.n, dirty = true;
    INSERT INTO tenant_epochs (tenant, n)
    SELECT tenant, 1 FROM old_rows GROUP BY tenant ORDER BY tenant COLLATE "C"
    ON CONFLICT (tenant) DO UPDATE SET n = tenant_epochs.n + 1;
    RETURN NULL;
END $$;

ALTER FUNCTION spool_jobs_inserted() SET search_path FROM CURRENT;
ALTER FUNCTION spool_jobs_updated() SET search_path FROM CURRENT;

-- A finished job changed by any writer moves its tenant's cache epoch.
--
-- The result cache (chalicelib/api/cache.py) keeps the answers of finished jobs
-- (succeeded, dead, cancelled), true until the tenant's epoch moves. Spool's only
-- change to a finished row, its redrive, bumped the epoch in a statement of its own,
-- and 0013 made every DELETE bump it; an UPDATE by hand moved none. An operator's redrive in psql
-- (`UPDATE jobs SET state = 'queued' ... WHERE state = 'dead'`) or a result mended by
-- hand left `GET /status` answering the old "dead" or "succeeded" from the cache for
-- its whole TTL (found in stop 54). The update trigger now bumps the epoch of each
-- tenant one of whose finished rows the statement changed in a column a cached
-- answer shows (api/schemas.job_view: all but the lease's, the attempt log's, the
-- webhook URL's and the unstarted mark's) or in its tenant, which owns the answer.
-- Changed by hand, those four others make no answer untrue and empty no cache. A
-- row moved into a finished state needs no bump: nothing was cached for it before.
--
-- A worker's statements never start from a finished row (claims from queued and
-- retrying, start marks, renewals and finishes from running): for them the new
-- part is the one look at the old rows' states below, a scan of the statement's own
-- transition table, and no write. Spool's redrive no longer bumps in a statement of
-- its own: it relies on this, as purge and discard rely on 0013's delete trigger (a
-- process of an earlier release still bumps once more itself: harmless). Epoch rows
-- are taken at the end of the updating statement, after its rows were locked, in
-- tenant order, as every bump does: no deadlock (a redrive of more ids than one
-- statement takes locks them all first, postgres.REDRIVE_LOCK_SQL).
--
-- An update that gives a job another id is not seen (the row is joined by its id,
-- as for the counts): Spool never does that, and an operator's would be a delete and
-- an insert by another name.

CREATE OR REPLACE FUNCTION spool_jobs_updated() RETURNS trigger LANGUAGE plpgsql
SET search_path FROM CURRENT AS $$
DECLARE
    touched boolean;
    was_finished boolean;
BEGIN
    -- Both looks in one query: the worker's statements pay one query, as before.
    SELECT EXISTS (SELECT 1 FROM new_rows),
        EXISTS (SELECT 1 FROM old_rows WHERE state IN ('succeeded', 'dead', 'cancelled'))
    INTO touched, was_finished;
    IF NOT touched THEN
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
    -- A finished row changed: its tenant's cached answers may be untrue.
    IF was_finished THEN
        INSERT INTO tenant_epochs (tenant, n)
        SELECT o.tenant, 1 FROM old_rows o JOIN new_rows n ON n.id = o.id
        WHERE o.state IN ('succeeded', 'dead', 'cancelled')
        AND (o.tenant, o.type, o.queue, o.priority, o.payload, o.state, o.attempts,
            o.max_attempts, o.run_at, o.result, o.last_error, o.idempotency_key,
            o.created_at, o.updated_at, o.started_at, o.finished_at)
        IS DISTINCT FROM (n.tenant, n.type, n.queue, n.priority, n.payload, n.state,
            n.attempts, n.max_attempts, n.run_at, n.result, n.last_error,
            n.idempotency_key, n.created_at, n.updated_at, n.started_at, n.finished_at)
        GROUP BY o.tenant ORDER BY o.tenant COLLATE "C"
        ON CONFLICT (tenant) DO UPDATE SET n = tenant_epochs.n + 1;
    END IF;
    RETURN NULL;
END $$;

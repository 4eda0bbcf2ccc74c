-- An enqueue counts its jobs by appending a row, not by upserting a counter (issue 16,
-- item 4).
--
-- The enqueue's `enqueued` counter bump was an upsert of a shared `counters` row: an
-- index probe, a row lock held to commit and a HOT update, about 15-30 us of the
-- single enqueue's server time. Spool's enqueue statement (postgres.ADD_SQL,
-- ADD_ONE_SQL) now inserts one row per (queue, type) it stored into enqueued_log
-- instead, in the same statement and so the same transaction as the jobs: a crash
-- never counts a job that was not stored, and an enqueue waits on no other's lock.
-- The table has no index, so an append is one heap tuple and its WAL record.
--
-- Readers stay exact: JobStore.counters adds the log's rows to the counters' in one
-- snapshot. spool_fold_enqueued moves the log into `counters` (as an upsert that
-- keeps 0008's pending and dirty) in one transaction: a row is deleted and counted
-- there together, and a second fold beside it waits for the row and then finds it
-- gone, so each is counted once. The scrape's fold (spool_fold_counters, replaced
-- below) runs it first, so the summaries and their ranking see every committed
-- enqueue as before; each worker's beat runs it too, which bounds the log where
-- nothing scrapes.
--
-- An earlier release's enqueue still upserts `counters` itself, and that stays right:
-- both are summed. An earlier release's JobStore.counters reads `counters` alone, so
-- it lags by the jobs enqueued since the last fold (a beat or a scrape).

CREATE TABLE enqueued_log (
    queue text COLLATE "C" NOT NULL,
    type  text COLLATE "C" NOT NULL,
    n     bigint NOT NULL
);
-- Appended by every enqueue and emptied by every fold: vacuum it early, as jobs is.
ALTER TABLE enqueued_log SET (
    autovacuum_vacuum_scale_factor = 0.02,
    autovacuum_vacuum_insert_scale_factor = 0.05,
    autovacuum_vacuum_cost_delay = 1
);

-- enable_seqscan on: the log has no index, so it is read whole; called from
-- spool_fold_counters (enable_seqscan off) its plan would carry the disable cost, and
-- that estimate turned JIT compilation on: 2-4 ms a scrape for an empty log.
CREATE FUNCTION spool_fold_enqueued() RETURNS void LANGUAGE sql
SET enable_seqscan = on AS $$
    WITH logged AS (DELETE FROM enqueued_log RETURNING queue, type, n)
    INSERT INTO counters (queue, type, event, shard, n, pending, dirty)
    SELECT queue, type, 'enqueued', pg_backend_pid() % 16, sum(n), sum(n), true FROM logged
    GROUP BY queue, type ORDER BY queue, type
    ON CONFLICT (queue, type, event, shard) DO UPDATE SET n = counters.n + excluded.n,
        pending = counters.pending + excluded.n, dirty = true;
$$;

-- 0008's fold of the counters, with the log folded first in the same transaction.
CREATE OR REPLACE FUNCTION spool_fold_counters() RETURNS void LANGUAGE plpgsql
SET enable_seqscan = off SET enable_bitmapscan = off AS $$
BEGIN
    PERFORM spool_fold_enqueued();
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

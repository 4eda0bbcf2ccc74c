-- An enqueue keeps the dashboard's counts itself (issue 16, item 4).
--
-- 0004's statement trigger counted every insert into jobs: a plpgsql call, a
-- transition table and its upsert, about 60 us of server time on the single
-- enqueue. Spool's enqueue statement (postgres.ADD_SQL, ADD_ONE_SQL) now upserts its
-- `queued` rows of job_counts in one more of its CTEs, in the same statement and so
-- the same transaction as the rows, and says so for its transaction:
-- set_config('spool.inserts_counted', 'on', true), evaluated while its rows are read,
-- before the insert ends and this trigger's WHEN is checked. Every other writer (a
-- process of an earlier release, SQL by hand) sets nothing, and the trigger counts
-- its rows as before: a job is counted once, whoever inserts it. The setting is the
-- transaction's (is_local), so it ends with it; Spool inserts nothing else into jobs.

DROP TRIGGER jobs_counted_insert ON jobs;
CREATE TRIGGER jobs_counted_insert AFTER INSERT ON jobs
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT
    WHEN (current_setting('spool.inserts_counted', true) IS DISTINCT FROM 'on')
    EXECUTE FUNCTION spool_jobs_inserted();

-- A job that leaves `running` never keeps an unstarted mark, whoever moved it.
--
-- 0011's mark is set by today's claim and cleared by today's start and reap; a worker
-- of an earlier release knows nothing of it. During a rolling upgrade such a worker
-- reaped a lapsed unstarted claim (spending the attempt, as it always did) and left
-- the mark on the row; its own claim then ran the handler under that stale mark, and
-- when it died mid-run today's reap gave the attempt back: the handler had run, yet
-- the attempt was not counted, so a job that kills workers could outlive
-- max_attempts. This trigger clears the mark on every move out of `running`, by any
-- writer. Its WHEN is checked without calling the function; today's reap and start
-- clear the mark themselves, so it fires only for an earlier release's writes (and a
-- job finished without being started). Nothing is rewritten: instant on any table.

CREATE FUNCTION spool_unstarted_cleared() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.unstarted := NULL;
    RETURN NEW;
END
$$;

CREATE TRIGGER jobs_unstarted_cleared BEFORE UPDATE OF state ON jobs
    FOR EACH ROW WHEN (NEW.state <> 'running' AND NEW.unstarted IS NOT NULL)
    EXECUTE FUNCTION spool_unstarted_cleared();

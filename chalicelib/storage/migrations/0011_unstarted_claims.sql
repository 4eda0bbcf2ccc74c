-- An attempt is spent only once its handler may have started (JobStore.start).
--
-- A worker claims ahead of its free threads. When it died with claimed jobs still
-- waiting in its prefetch buffer (or a claim's reply was lost with its connection),
-- the reap counted an attempt each for jobs whose handler never ran, and enough such
-- crashes buried a job that never ran at all. A worker now claims with
-- `unstarted = true` and clears it (JobStore.start) just before each handler runs;
-- the reap gives a lapsed lease that is still unstarted its attempt back (queued,
-- due now, nothing counted) and reaps the others as before.
--
-- NULL is "started": rows claimed by an earlier release, and every claim made with
-- started=True, keep today's reap. Adding a nullable column without a default
-- rewrites no rows, so this is instant on a table of any size.

ALTER TABLE jobs ADD COLUMN unstarted boolean;

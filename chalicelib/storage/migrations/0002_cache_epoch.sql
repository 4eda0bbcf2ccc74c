-- The invalidation epoch (JobStore.cache_epoch): one row whose n is bumped in
-- the same transaction as every redrive or purge that changed a job, so HTTP
-- result caches in every process can tell, with one primary-key read about
-- once a second, whether a finished job they hold may have changed.

CREATE TABLE cache_epoch (
    id boolean PRIMARY KEY DEFAULT true CHECK (id),
    n  bigint NOT NULL
);
INSERT INTO cache_epoch (id, n) VALUES (true, 0);

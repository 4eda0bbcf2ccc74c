-- Attempt history and worker beats (issue 11: observability).
--
-- attempt_log: the job's last N attempts (SPOOL_ATTEMPT_HISTORY), oldest
-- first, as a jsonb array of the objects chalicelib/storage/history.py
-- encodes. It is appended in the same statement as the finish (or the reap
-- of an expired lease) and read only by JobStore.attempts, never on claim or
-- get. Text Postgres cannot hold (NUL, lone surrogates) is escaped the way
-- the store escapes every other text column.
-- lease_worker: who holds the lease ("host:pid" or "lambda:<request id>"),
-- written by the claim, so a reaped lease can say whose attempt vanished.
-- Both are nullable without a default: adding them rewrites nothing.
ALTER TABLE jobs ADD COLUMN attempt_log jsonb, ADD COLUMN lease_worker text;

-- One row per worker process, upserted every few seconds (JobStore.beat);
-- rows older than a day are deleted by the next beat.
CREATE TABLE workers (
    worker     text COLLATE "C" PRIMARY KEY,
    queues     text,                -- JSON list, NULL for every queue
    started_at timestamptz NOT NULL,
    last_beat  timestamptz NOT NULL
);
CREATE INDEX workers_last_beat ON workers (last_beat);

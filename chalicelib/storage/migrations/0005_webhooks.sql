-- Signed completion webhooks (issue 13): the job's callback URL and the outbox.
--
-- callback_url: where the job's completion webhook goes (the job's own URL or
-- its tenant's default endpoint, chosen at enqueue); NULL: no webhook.
-- Nullable without a default, so adding it rewrites nothing.
ALTER TABLE jobs ADD COLUMN callback_url text;

-- One row per terminal transition of a job with a callback URL, inserted by
-- the statement that makes the transition (finish, reap, cancel), so the
-- state change and its webhook commit together. Workers lease due rows
-- (claim_webhooks), POST them and record the outcome (finish_webhook); a
-- lease that runs out makes the row claimable again under the same id.
CREATE TABLE webhook_deliveries (
    id               text COLLATE "C" PRIMARY KEY,     -- the webhook-id header
    job_id           text COLLATE "C" NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    tenant           text COLLATE "C" NOT NULL,
    url              text NOT NULL,
    event            text COLLATE "C" NOT NULL,        -- job.succeeded | job.dead | job.cancelled
    state            text COLLATE "C" NOT NULL
        CHECK (state IN ('pending', 'delivered', 'failed')),
    attempts         integer NOT NULL DEFAULT 0,
    next_at          timestamptz,
    lease_token      text COLLATE "C",
    lease_expires_at timestamptz,
    created_at       timestamptz NOT NULL,
    finished_at      timestamptz,
    last_error       text
);
-- Claims: only pending rows, in due order.
CREATE INDEX webhooks_due ON webhook_deliveries (next_at, created_at, id) WHERE state = 'pending';
-- webhook_counts: failed deliveries, what an operator alerts on.
CREATE INDEX webhooks_failed ON webhook_deliveries (created_at) WHERE state = 'failed';
-- A job's deliveries (GET /status?webhooks=true) and the purge's cascade.
CREATE INDEX webhooks_by_job ON webhook_deliveries (job_id);

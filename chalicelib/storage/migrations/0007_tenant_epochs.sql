-- The invalidation epoch per tenant (JobStore.cache_epoch(tenant)): a row per
-- tenant, made by its first bump (a tenant without one reads 0), whose n goes
-- up in the same transaction as every redrive or purge that changed one of
-- that tenant's jobs. One store-wide epoch (0002) let one tenant's redrives
-- empty every tenant's result cache, and let a tenant see that another had
-- redriven or purged. The old cache_epoch table stays for processes of the
-- previous release during a rollout; this release neither reads nor bumps it.

CREATE TABLE tenant_epochs (
    tenant text PRIMARY KEY,
    n      bigint NOT NULL
);

-- The unprivileged user id each tenant's learners and replicas run as (local backend),
-- handed out in order from the configured base. A tenant keeps its id for good.
CREATE TABLE tenant_uids (
    tenant TEXT PRIMARY KEY,
    uid BIGINT NOT NULL UNIQUE
);
-- The per-tenant count of unfinished jobs (submission limits).
CREATE INDEX jobs_tenant_state ON jobs (tenant, state)

-- Every write of a job stamps it with the next change number (counter 'change'), so
-- the controller reads only the jobs that changed since its last pass.
ALTER TABLE jobs ADD COLUMN version BIGINT NOT NULL DEFAULT 0;
INSERT INTO counters (name, value) VALUES ('change', 0);
CREATE INDEX jobs_version ON jobs (version);
-- A queued job's position in its queue, and a tenant's pages of jobs.
CREATE INDEX jobs_queue_state ON jobs (queue, state, desired, deleted, id);
CREATE INDEX jobs_tenant_id ON jobs (tenant, id);
CREATE INDEX jobs_state_id ON jobs (state, id);
-- The leader among several servers on one PostgreSQL: its term (raised at every change
-- of leader), who holds it, the API address it serves, and until when (the database's
-- clock, Unix ms). Writes of the leader's work carry its term and are refused once
-- another holds the row (see Store::campaign).
CREATE TABLE leader (
    id BIGINT PRIMARY KEY,
    term BIGINT NOT NULL,
    holder TEXT NOT NULL,
    url TEXT NOT NULL,
    expires_ms BIGINT NOT NULL
);
INSERT INTO leader (id, term, holder, url, expires_ms) VALUES (1, 0, '', '', 0)

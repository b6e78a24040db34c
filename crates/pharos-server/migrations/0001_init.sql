-- Portable SQL: the same text runs on SQLite and PostgreSQL. Times are Unix milliseconds.
CREATE TABLE counters (
    name TEXT PRIMARY KEY,
    value BIGINT NOT NULL
);
INSERT INTO counters (name, value) VALUES ('job', 0);
CREATE TABLE tokens (
    token_hash TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    admin BIGINT NOT NULL,
    label TEXT NOT NULL,
    created_ms BIGINT NOT NULL
);
CREATE TABLE jobs (
    id BIGINT PRIMARY KEY,
    tenant TEXT NOT NULL,
    name TEXT NOT NULL,
    manifest TEXT NOT NULL,
    state TEXT NOT NULL,
    error_code TEXT,
    message TEXT NOT NULL,
    queue TEXT NOT NULL,
    priority BIGINT NOT NULL,
    submitted_ms BIGINT NOT NULL,
    updated_ms BIGINT NOT NULL,
    started_ms BIGINT,
    finished_ms BIGINT,
    attempt BIGINT NOT NULL,
    restarts BIGINT NOT NULL,
    desired TEXT NOT NULL,
    model_sha256 TEXT,
    not_before_ms BIGINT NOT NULL,
    stop_sent_ms BIGINT,
    wait_reason TEXT,
    master_port BIGINT,
    idem_key TEXT,
    deleted BIGINT NOT NULL
);
CREATE UNIQUE INDEX jobs_idem ON jobs (tenant, idem_key);
CREATE INDEX jobs_state ON jobs (state);
CREATE TABLE job_status (
    job_id BIGINT NOT NULL,
    seq BIGINT NOT NULL,
    state TEXT NOT NULL,
    time_ms BIGINT NOT NULL,
    message TEXT NOT NULL,
    error_code TEXT,
    PRIMARY KEY (job_id, seq)
);
CREATE TABLE job_events (
    job_id BIGINT NOT NULL,
    seq BIGINT NOT NULL,
    time_ms BIGINT NOT NULL,
    kind TEXT NOT NULL,
    message TEXT NOT NULL,
    PRIMARY KEY (job_id, seq)
)

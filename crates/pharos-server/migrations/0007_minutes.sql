-- Every service's per-minute load history: one row per service and hour (unix minute
-- / 60), the hour's minutes packed (see src/minutes.rs). BYTEA is PostgreSQL's bytes
-- type, and a column SQLite stores blobs in unchanged.
CREATE TABLE service_minutes (
    service TEXT NOT NULL,
    hour BIGINT NOT NULL,
    data BYTEA NOT NULL,
    PRIMARY KEY (service, hour)
);
-- The unix minute a day of the service's history starts at (modulo the day's length),
-- as its imported history said (none: days start at 00:00 UTC).
ALTER TABLE services ADD COLUMN day_origin BIGINT

-- Inference services: the spec as applied (JSON), the router's port, the replica target.
CREATE TABLE services (
    name TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    spec TEXT NOT NULL,
    port BIGINT NOT NULL,
    target BIGINT,
    created_ms BIGINT NOT NULL
);
CREATE TABLE service_events (
    service TEXT NOT NULL,
    seq BIGINT NOT NULL,
    time_ms BIGINT NOT NULL,
    kind TEXT NOT NULL,
    message TEXT NOT NULL,
    PRIMARY KEY (service, seq)
)

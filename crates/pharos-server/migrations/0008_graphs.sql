-- Function graphs: the spec as applied (JSON) and the entry's port. Their functions'
-- replicas are services (named GRAPH.FUNCTION) in the services table.
CREATE TABLE graphs (
    name TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    spec TEXT NOT NULL,
    port BIGINT NOT NULL,
    created_ms BIGINT NOT NULL
)

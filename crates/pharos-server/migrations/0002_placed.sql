-- When the current attempt was placed (preemption compares the latest start).
ALTER TABLE jobs ADD COLUMN placed_ms BIGINT

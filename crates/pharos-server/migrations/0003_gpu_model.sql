-- The GPU model the scheduler chose for the current attempt.
ALTER TABLE jobs ADD COLUMN gpu_model TEXT

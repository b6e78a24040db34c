-- The GPU devices of each learner of the current attempt (JSON: [[0], [1]]).
ALTER TABLE jobs ADD COLUMN devices TEXT

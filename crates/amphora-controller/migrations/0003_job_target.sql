-- The worker's claim looks for older or running jobs of the same target
-- (jobs of one object run one at a time, in order). (0002 is the lbaas
-- API's.)
CREATE INDEX job_target ON job (target_id, state);

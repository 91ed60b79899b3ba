-- The dispatcher asks for the earliest retry due time after every wake; without this index
-- that was a scan of every queued run.
CREATE INDEX runs_due ON runs (not_before) WHERE state = 'queued' AND not_before IS NOT NULL;

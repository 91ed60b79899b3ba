-- Retention finds the runs whose own TTL has passed by when each expires (finished_at + its
-- job's retention_s, as the run stored its job): at each sweep it had paged through every
-- finished run older than the shortest TTL of the jobs declared then (a million runs kept for
-- good beside a job with a TTL, read again every minute), and the runs of a job removed since
-- were kept by the TTLs of the others (for good, if none had one). sqlite_sql.py's EXPIRED
-- spells the expression and the condition alike. Only a run's end (finished_at) evaluates
-- them, once; json_valid keeps a damaged spec from failing that end.
CREATE INDEX runs_expiry ON runs (finished_at + json_extract(spec, '$.retention_s'), id)
WHERE finished_at IS NOT NULL AND json_valid(spec)
    AND json_type(spec, '$.retention_s') IN ('integer', 'real');

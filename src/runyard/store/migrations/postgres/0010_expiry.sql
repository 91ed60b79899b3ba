-- Retention finds the runs whose own TTL has passed by when each expires (the SQLite
-- migration 0016 says why); postgres_sql.py's EXPIRED spells the expression and the condition
-- alike. The TTL is clamped before the cast: jsonb keeps numbers no double holds.
CREATE INDEX IF NOT EXISTS runs_expiry ON runs (
    (finished_at + LEAST((spec ->> 'retention_s')::numeric, 1e15)::double precision), id
) WHERE finished_at IS NOT NULL AND jsonb_typeof(spec -> 'retention_s') = 'number';

-- When a run's state last changed, set by every statement that changes it (from the server's
-- clock), on both backends. On SQLite a trigger writes the state event from it; here the
-- event is still an INSERT of its own, in the same round trip's transaction.
ALTER TABLE runs ADD COLUMN IF NOT EXISTS state_at double precision;

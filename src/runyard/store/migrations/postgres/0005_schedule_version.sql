-- A schedule's version: each write is of the version it read, so that a server writing from a
-- stale copy (a change made elsewhere meanwhile, a delete) is refused, not obeyed: a change
-- through one server undone by another's fire, a deleted schedule brought back, a slot fired
-- twice. Rows already stored are at 1; 0 means never stored.
ALTER TABLE schedules ADD COLUMN IF NOT EXISTS version bigint NOT NULL DEFAULT 1;

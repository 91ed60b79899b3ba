-- Why a schedule's fires make no run (its job removed, its params no longer valid, no room):
-- shown on the schedule and counted apart from the skips of its overlap policy, where they
-- were counted as skips and said only in the log, one line per fire.
ALTER TABLE schedules ADD COLUMN IF NOT EXISTS fail_count bigint NOT NULL DEFAULT 0;
ALTER TABLE schedules ADD COLUMN IF NOT EXISTS last_error text;

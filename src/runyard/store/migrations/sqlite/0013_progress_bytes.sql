-- The bytes of a run's stored progress events: bounded per run (store/progress.py), where
-- only their number was (10,000 lines of 64 KiB each were 640 MB of one run's events).
ALTER TABLE runs ADD COLUMN progress_bytes INTEGER NOT NULL DEFAULT 0;

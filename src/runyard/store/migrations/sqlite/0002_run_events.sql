-- State transitions and progress of each run, numbered per run: what /events replays.
CREATE TABLE run_events (
    run_id  TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    seq     INTEGER NOT NULL,
    at      REAL NOT NULL,
    kind    TEXT NOT NULL,
    data    TEXT NOT NULL,
    PRIMARY KEY (run_id, seq)
);
-- How far into its progress file each attempt has been read, and what was skipped.
ALTER TABLE attempts ADD COLUMN progress_offset INTEGER NOT NULL DEFAULT 0;
ALTER TABLE runs ADD COLUMN progress_skipped INTEGER NOT NULL DEFAULT 0;

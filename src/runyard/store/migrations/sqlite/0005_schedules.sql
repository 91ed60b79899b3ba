-- Schedules: what to submit and when; their state is updated with each fire's run.
CREATE TABLE schedules (
    id             TEXT PRIMARY KEY,
    job            TEXT NOT NULL,
    params         TEXT NOT NULL,
    priority       INTEGER,
    labels         TEXT NOT NULL,
    cron           TEXT,
    interval_s     REAL,
    overlap        TEXT NOT NULL,
    catch_up       TEXT NOT NULL,
    paused         INTEGER NOT NULL DEFAULT 0,
    created_at     REAL NOT NULL,
    last_fired_at  REAL,
    fire_count     INTEGER NOT NULL DEFAULT 0,
    skip_count     INTEGER NOT NULL DEFAULT 0,
    last_run_id    TEXT,
    next_fire_at   REAL,
    pending        INTEGER NOT NULL DEFAULT 0
);

-- Runs and their attempts. Times are UNIX seconds (REAL); JSON columns hold objects.
CREATE TABLE runs (
    id               TEXT PRIMARY KEY,
    job              TEXT NOT NULL,
    params           TEXT NOT NULL,
    state            TEXT NOT NULL,
    priority         INTEGER NOT NULL,
    labels           TEXT NOT NULL DEFAULT '{}',
    batch_id         TEXT,
    schedule_id      TEXT,
    idempotency_key  TEXT UNIQUE,
    request_hash     TEXT,
    created_at       REAL NOT NULL,
    started_at       REAL,
    finished_at      REAL,
    attempt          INTEGER NOT NULL DEFAULT 0,
    exit_code        INTEGER,
    reason           TEXT,
    progress         TEXT,
    not_before       REAL,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    spec             TEXT NOT NULL
);
-- The dispatcher's scan: queued runs by priority, then age.
CREATE INDEX runs_queue ON runs (priority DESC, id) WHERE state = 'queued';
CREATE INDEX runs_by_job ON runs (job, id);
CREATE INDEX runs_by_state ON runs (state, id);
CREATE INDEX runs_by_batch ON runs (batch_id, id) WHERE batch_id IS NOT NULL;

CREATE TABLE attempts (
    run_id          TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    number          INTEGER NOT NULL,
    state           TEXT NOT NULL,
    host            TEXT NOT NULL,
    created_at      REAL NOT NULL,
    pid             INTEGER,
    pgid            INTEGER,
    proc_start_time REAL,
    started_at      REAL,
    ended_at        REAL,
    exit_code       INTEGER,
    signal          INTEGER,
    outcome         TEXT,
    peak_rss_kb     INTEGER,
    PRIMARY KEY (run_id, number)
);
CREATE INDEX attempts_active ON attempts (state) WHERE state IN ('starting', 'running');

-- The whole schema as of SQLite migration 0006, in PostgreSQL's types.
CREATE TABLE runs (
    id               TEXT PRIMARY KEY,
    job              TEXT NOT NULL,
    params           JSONB NOT NULL,
    state            TEXT NOT NULL,
    priority         INTEGER NOT NULL,
    labels           JSONB NOT NULL DEFAULT '{}',
    batch_id         TEXT,
    schedule_id      TEXT,
    idempotency_key  TEXT UNIQUE,
    request_hash     TEXT,
    created_at       DOUBLE PRECISION NOT NULL,
    started_at       DOUBLE PRECISION,
    finished_at      DOUBLE PRECISION,
    attempt          INTEGER NOT NULL DEFAULT 0,
    exit_code        INTEGER,
    reason           TEXT,
    progress         JSONB,
    not_before       DOUBLE PRECISION,
    cancel_requested BOOLEAN NOT NULL DEFAULT FALSE,
    spec             JSONB NOT NULL,
    progress_skipped INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX runs_queue ON runs (priority DESC, id) WHERE state = 'queued';
CREATE INDEX runs_due ON runs (not_before) WHERE state = 'queued' AND not_before IS NOT NULL;
CREATE INDEX runs_by_job ON runs (job, id);
CREATE INDEX runs_by_state ON runs (state, id);
CREATE INDEX runs_by_batch ON runs (batch_id, id) WHERE batch_id IS NOT NULL;
CREATE INDEX runs_finished ON runs (finished_at) WHERE finished_at IS NOT NULL;

CREATE TABLE attempts (
    run_id          TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    number          INTEGER NOT NULL,
    state           TEXT NOT NULL,
    host            TEXT NOT NULL,
    created_at      DOUBLE PRECISION NOT NULL,
    pid             INTEGER,
    pgid            INTEGER,
    proc_start_time DOUBLE PRECISION,
    started_at      DOUBLE PRECISION,
    ended_at        DOUBLE PRECISION,
    exit_code       INTEGER,
    signal          INTEGER,
    outcome         TEXT,
    peak_rss_kb     BIGINT,
    progress_offset BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (run_id, number)
);
CREATE INDEX attempts_active ON attempts (state) WHERE state IN ('starting', 'running');

CREATE TABLE run_events (
    run_id  TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    seq     INTEGER NOT NULL,
    at      DOUBLE PRECISION NOT NULL,
    kind    TEXT NOT NULL,
    data    JSONB NOT NULL,
    PRIMARY KEY (run_id, seq)
);

CREATE TABLE batches (
    id          TEXT PRIMARY KEY,
    job         TEXT NOT NULL,
    size        INTEGER NOT NULL,
    created_at  DOUBLE PRECISION NOT NULL,
    request     JSONB NOT NULL
);

CREATE TABLE schedules (
    id             TEXT PRIMARY KEY,
    job            TEXT NOT NULL,
    params         JSONB NOT NULL,
    priority       INTEGER,
    labels         JSONB NOT NULL,
    cron           TEXT,
    interval_s     DOUBLE PRECISION,
    overlap        TEXT NOT NULL,
    catch_up       TEXT NOT NULL,
    paused         BOOLEAN NOT NULL DEFAULT FALSE,
    created_at     DOUBLE PRECISION NOT NULL,
    last_fired_at  DOUBLE PRECISION,
    fire_count     INTEGER NOT NULL DEFAULT 0,
    skip_count     INTEGER NOT NULL DEFAULT 0,
    last_run_id    TEXT,
    next_fire_at   DOUBLE PRECISION,
    pending        BOOLEAN NOT NULL DEFAULT FALSE
);

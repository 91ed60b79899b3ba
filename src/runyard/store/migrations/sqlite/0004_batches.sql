-- Runs created by one request: N iterations, or the cartesian product of a sweep.
CREATE TABLE batches (
    id          TEXT PRIMARY KEY,
    job         TEXT NOT NULL,
    size        INTEGER NOT NULL,
    created_at  REAL NOT NULL,
    request     TEXT NOT NULL
);

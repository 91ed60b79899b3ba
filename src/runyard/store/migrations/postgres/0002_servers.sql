-- Server membership: each server holds a lease it renews; attempts carry the lease token of
-- the server that claimed them, so a server whose lease expired cannot write them any more.
CREATE TABLE servers (
    id TEXT PRIMARY KEY,
    url TEXT NOT NULL,
    token TEXT NOT NULL,
    capacity INTEGER NOT NULL,
    started_at DOUBLE PRECISION NOT NULL,
    heartbeat_at DOUBLE PRECISION NOT NULL,
    lease_expires_at DOUBLE PRECISION NOT NULL
);
ALTER TABLE attempts ADD COLUMN lease_token TEXT;
CREATE INDEX attempts_active_on_host ON attempts (host) WHERE state IN ('starting', 'running');

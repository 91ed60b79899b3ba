-- Server membership: each server holds a lease it renews; attempts carry the lease token of
-- the server that claimed them, so a server whose lease expired cannot write them any more.
CREATE TABLE servers (
    id TEXT PRIMARY KEY,
    url TEXT NOT NULL,
    token TEXT NOT NULL,
    capacity INTEGER NOT NULL,
    started_at REAL NOT NULL,
    heartbeat_at REAL NOT NULL,
    lease_expires_at REAL NOT NULL
);
ALTER TABLE attempts ADD COLUMN lease_token TEXT;

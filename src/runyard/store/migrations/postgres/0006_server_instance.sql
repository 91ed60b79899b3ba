-- Which process holds a server id's lease: its host and data directory. A second process
-- started under an id whose lease another one holds is refused, not handed that lease (it
-- declared the first one's programs lost and served its runs' files as empty). A table of its
-- own, not a column of `servers`: older servers insert their rows without naming columns.
CREATE TABLE server_instances (
    id TEXT PRIMARY KEY,
    instance TEXT NOT NULL
);

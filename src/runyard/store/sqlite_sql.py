"""Every SQL statement of the SQLite store, named, in one place (the names logic.py runs)."""

from __future__ import annotations

from typing import Any

from runyard.models import RunFilter
from runyard.store.rows import (
    ATTEMPT_COLUMNS,
    RUN_COLUMNS,
    SCHEDULE_COLUMNS,
    SCHEDULE_WIDTH,
    SCHEDULE_WRITTEN,
)
from runyard.store.sqlite_steps import ReadBack, TakeNext, WriteAll


def pragmas(busy_timeout_ms: int, synchronous: str, wal_limit_bytes: int) -> list[str]:
    """Set on the writer's connection: wait for a lock instead of failing, WAL, durability
    level, and the size a rewound WAL file is cut back to."""
    return [
        busy_timeout(busy_timeout_ms),
        "PRAGMA journal_mode = WAL",
        f"PRAGMA synchronous = {synchronous}",
        "PRAGMA foreign_keys = ON",
        f"PRAGMA journal_size_limit = {int(wal_limit_bytes)}",
    ]


def busy_timeout(ms: int) -> str:
    return f"PRAGMA busy_timeout = {int(ms)}"


# every frame copied back, then the next write starts the WAL over (waits for the reads on it)
REWIND_WAL = "PRAGMA wal_checkpoint(RESTART)"


BEGIN = "BEGIN IMMEDIATE"  # takes the write lock up front: no failure half way on an upgrade
# each unit of a group commit in its own savepoint: one failing is undone alone
SAVEPOINT = "SAVEPOINT unit"
RELEASE = "RELEASE unit"
ROLLBACK_TO = "ROLLBACK TO unit"
PING = "SELECT 1"
# a write of the header only (user_version set to itself): does a write go through again?
GET_USER_VERSION = "PRAGMA user_version"
SCHEMA_VERSION = "PRAGMA schema_version"  # moves with every change of the schema


def set_user_version(version: int) -> str:
    return f"PRAGMA user_version = {int(version)}"


# The versions applied, in `schema_versions` since migration 0008 (before, `schema_migrations`,
# whose rows move over). A runyard from before 0008 then finds no version applied, runs 0001
# again and stops at start-up ("table runs already exists"): it would otherwise write the
# state events 0008's triggers write, and its claims would fail (docs/operations.md).
CREATE_MIGRATIONS = (
    "CREATE TABLE IF NOT EXISTS schema_versions "
    "(version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at REAL NOT NULL)"
)
LEGACY_MIGRATIONS = (
    "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'"
)
ADOPT_LEGACY_MIGRATIONS = (
    "INSERT OR IGNORE INTO schema_versions SELECT version, name, applied_at FROM schema_migrations",
    "DROP TABLE schema_migrations",
)
APPLIED_MIGRATIONS = "SELECT version FROM schema_versions"
RECORD_MIGRATION = "INSERT INTO schema_versions VALUES (?, ?, ?)"

INSERT_RUNS = f"INSERT INTO runs ({RUN_COLUMNS}) VALUES ({', '.join('?' * 21)})"  # noqa: S608
GET_RUN = f"SELECT {RUN_COLUMNS} FROM runs WHERE id = ?"  # noqa: S608
# Writes of `runs` that the logic reads a row back from run without RETURNING, the row read
# after: RETURNING beside the table's triggers costs more than both (sqlite_steps.py).
INSERT_RUN = ReadBack(INSERT_RUNS + " ON CONFLICT (idempotency_key) DO NOTHING", 0)  # its id
LAST_ATTEMPTS = """
SELECT r.id, CASE WHEN r.state IN ('succeeded', 'failed', 'cancelled', 'timed_out') THEN NULL
  ELSE (SELECT coalesce(max(a.number), 0) FROM attempts a WHERE a.run_id = r.id) END
FROM runs r WHERE r.id IN (SELECT value FROM json_each(?))
"""
GET_RUN_BY_KEY = f"SELECT {RUN_COLUMNS} FROM runs WHERE idempotency_key = ?"  # noqa: S608
# the run's state; no lock to take, the transaction holds the database's write lock
LOCK_RUN = "SELECT state FROM runs WHERE id = ?"
LOCK_RUN_PROGRESS = "SELECT progress_bytes FROM runs WHERE id = ?"
# an end locks nothing first: one connection writes, one transaction at a time
HOLD_RUN = None


def _list_runs(flt: RunFilter) -> tuple[str, list[Any]]:
    """Newest first from the cursor, one row past the page; filters as bound parameters."""
    where: list[str] = []
    args: list[Any] = []
    for column, value in (("job", flt.job), ("batch_id", flt.batch_id)):
        if value is not None:
            where.append(f"{column} = ?")
            args.append(value)
    if flt.state is not None:
        where.append("state = ?")
        args.append(flt.state.value)
    for key, value in flt.labels:
        where.append("json_extract(labels, ?) = ?")
        args.extend([f'$."{key}"', value])
    if flt.cursor is not None:
        where.append("id < ?")
        args.append(flt.cursor)
    sql = f"SELECT {RUN_COLUMNS} FROM runs"  # noqa: S608
    sql += (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY id DESC LIMIT ?"
    return sql, [*args, flt.limit + 1]


LIST_RUNS = _list_runs
COUNT_RUNS = "SELECT count(*) FROM runs WHERE state = ?"
COUNT_RUNS_OF_JOB = "SELECT count(*) FROM runs WHERE state = ? AND job = ?"
COUNT_BY_JOB = "SELECT job, count(*) FROM runs WHERE state = ? GROUP BY job"

# A retry's time that is no number (written behind the server's back) is due now, not never
# (`typeof` below): SQLite sorts text above every number, so such a run was never claimed, and
# the earliest due time, text, broke the dispatcher's timer twice a second (a probe).
# INDEXED BY: without statistics SQLite would pick runs_by_state and sort every queued run;
# the partial queue index yields them already in claim order.
CLAIM_CANDIDATES = """
SELECT id, job FROM runs INDEXED BY runs_queue
WHERE state = 'queued'
  AND (not_before IS NULL OR not_before <= ? OR typeof(not_before) NOT IN ('integer', 'real'))
  AND job NOT IN (SELECT value FROM json_each(?))
ORDER BY priority DESC, id
LIMIT ?
"""
# A retry's claim clears its last attempt's exit code and reason: the run runs again (a probe:
# a client polling `exit_code` took a retry under way for a run over)
_TAKE_RUN = """
UPDATE runs SET state = 'running', attempt = attempt + 1, not_before = NULL,
    exit_code = NULL, reason = NULL,
    started_at = coalesce(started_at, max(?, created_at)), state_at = max(?, created_at)
WHERE id = ? AND state = 'queued'
"""
# the claimed run as it now is
CLAIM_RUN = ReadBack(_TAKE_RUN, 2, GET_RUN)
# A claim with no job's limit in play: the first `limit` claimable runs in the queue's order,
# each taken, then read as it now is.
CLAIM_NEXT = TakeNext(
    """
    SELECT id FROM runs INDEXED BY runs_queue
    WHERE state = 'queued'
      AND (not_before IS NULL OR not_before <= :now
           OR typeof(not_before) NOT IN ('integer', 'real'))
    ORDER BY priority DESC, id
    LIMIT :limit
    """,
    _TAKE_RUN,
    GET_RUN,
)
NEXT_DUE = (
    "SELECT min(not_before) FROM runs INDEXED BY runs_due "
    "WHERE state = 'queued' AND not_before IS NOT NULL AND not_before > ? "
    "AND typeof(not_before) IN ('integer', 'real')"
)

INSERT_ATTEMPT = f"INSERT INTO attempts ({ATTEMPT_COLUMNS}) VALUES ({', '.join('?' * 15)})"  # noqa: S608
GET_ATTEMPTS = f"SELECT {ATTEMPT_COLUMNS} FROM attempts WHERE run_id = ? ORDER BY number"  # noqa: S608
ACTIVE_ATTEMPTS = (
    f"SELECT {ATTEMPT_COLUMNS} FROM attempts WHERE state IN ('starting', 'running') "  # noqa: S608
    "AND (? IS NULL OR host = ?) ORDER BY run_id, number"
)
HELD_ATTEMPTS = """
SELECT a.run_id, a.number, r.job FROM attempts a JOIN runs r ON r.id = a.run_id
WHERE a.state IN ('starting', 'running') AND a.host = ?
"""
SERVER_COLUMNS = "id, url, token, capacity, started_at, heartbeat_at, lease_expires_at"
LOCK_SERVER_ID: str | None = None  # every write transaction already runs alone
GET_SERVER = f"SELECT {SERVER_COLUMNS} FROM servers WHERE id = ?"  # noqa: S608
GET_SERVER_FOR_UPDATE = GET_SERVER  # one writer at a time: nothing renews meanwhile
GET_SERVER_INSTANCE = "SELECT instance FROM server_instances WHERE id = ?"
SET_SERVER_INSTANCE = (
    "INSERT INTO server_instances (instance, id) VALUES (?, ?) "
    "ON CONFLICT (id) DO UPDATE SET instance = excluded.instance"
)
INSERT_SERVER = f"INSERT INTO servers ({SERVER_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)"  # noqa: S608
UPDATE_SERVER = """
UPDATE servers SET url = ?, token = ?, capacity = ?, started_at = ?, heartbeat_at = ?,
    lease_expires_at = ?, previous_expires_at = ?
WHERE id = ?
"""
# a new life of a server id holds every attempt of the id nobody settled (those its
# supervisor still runs it adopts; the rest it settles once the life it replaced is fenced)
RETOKEN_ATTEMPTS = """
UPDATE attempts SET lease_token = ?
WHERE host = ? AND lease_token <> ? AND state IN ('starting', 'running')
"""
RENEW_SERVER = """
UPDATE servers SET heartbeat_at = ?, lease_expires_at = ?
WHERE id = ? AND token = ? AND lease_expires_at > ?
"""
LIVE_SERVERS = f"SELECT {SERVER_COLUMNS} FROM servers WHERE lease_expires_at > ? ORDER BY id"  # noqa: S608
# attempts whose claiming lease ended before the cutoff: their server's current one, or, under
# a token it replaced, the lease that registration replaced (which ended after any older one)
ORPHANED_ATTEMPTS = f"""
SELECT {", ".join("a." + c.strip() for c in ATTEMPT_COLUMNS.split(","))} FROM attempts a
LEFT JOIN servers s ON s.id = a.host
WHERE a.state IN ('starting', 'running') AND a.lease_token IS NOT NULL AND (s.id IS NULL
    OR CASE WHEN s.token = a.lease_token THEN s.lease_expires_at
            ELSE coalesce(s.previous_expires_at, 0) END <= ?)
ORDER BY a.run_id
"""  # noqa: S608
ATTEMPT_STARTED = """
UPDATE attempts SET state = 'running', pid = ?, pgid = ?, proc_start_time = ?, started_at = ?
WHERE run_id = ? AND number = ? AND state = 'starting'
"""
END_ATTEMPT = """
UPDATE attempts SET state = ?, ended_at = ?, exit_code = ?, signal = ?, outcome = ?,
    peak_rss_kb = ?, pid = coalesce(pid, ?), started_at = coalesce(started_at, ?)
WHERE run_id = ? AND number = ? AND state IN ('starting', 'running')
    AND (? IS NULL OR lease_token = ?)
RETURNING host, (SELECT state FROM runs WHERE id = ?),
    (SELECT cancel_requested FROM runs WHERE id = ?)
"""
# the ended run as it now is
END_RUN = ReadBack(
    """
    UPDATE runs SET state = ?, exit_code = ?, reason = ?, finished_at = ?, not_before = ?,
        state_at = ?
    WHERE id = ? AND state = ?
    """,
    6,
    GET_RUN,
)
SET_CANCEL_REQUESTED = "UPDATE runs SET cancel_requested = 1 WHERE id = ? AND state = 'running'"
DELETE_RUN = (
    "DELETE FROM runs WHERE id = ? AND state IN ('succeeded', 'failed', 'cancelled', 'timed_out')"
)
SET_PROGRESS = "UPDATE runs SET progress = ? WHERE id = ?"

# numbered in the statement that adds it: one statement per event; from the numbers only (one
# rewritten as text is the largest to max(): migration 0015)
ADD_EVENT = (
    "INSERT INTO run_events (run_id, seq, at, kind, data) "
    "SELECT ?, coalesce(max(seq), 0) + 1, ?, ?, ? FROM run_events "
    "WHERE run_id = ? AND seq <= 9223372036854775807"
)
# A state event is written by SQLite, in the statement that inserts the run or changes its
# state (triggers runs_first_event and runs_state_event, migration 0008): no step of its own.
ADD_STATE_EVENT = None
ADD_FIRST_EVENTS = None
LIST_EVENTS = (  # with its data's size: a page may be bounded in bytes (store/progress.py)
    "SELECT run_id, seq, at, kind, data, length(data) FROM run_events "
    "WHERE run_id = ? AND seq > ? ORDER BY seq LIMIT ?"
)
LAST_EVENT_SEQ = (
    "SELECT coalesce(max(seq), 0) FROM run_events WHERE run_id = ? AND seq <= 9223372036854775807"
)
SAVE_PROGRESS = """
UPDATE runs SET progress = coalesce(?, progress), progress_skipped = progress_skipped + ?,
    progress_bytes = progress_bytes + ?
WHERE id = ?
"""
SET_PROGRESS_OFFSET = "UPDATE attempts SET progress_offset = ? WHERE run_id = ? AND number = ?"
GET_PROGRESS_OFFSET = "SELECT progress_offset FROM attempts WHERE run_id = ? AND number = ?"

BATCH_COLUMNS = "id, job, size, created_at, request, idempotency_key"
INSERT_BATCH = f"INSERT INTO batches ({BATCH_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)"  # noqa: S608
INSERT_BATCH_KEYED = INSERT_BATCH + " ON CONFLICT (idempotency_key) DO NOTHING RETURNING id"
GET_BATCH = f"SELECT {BATCH_COLUMNS} FROM batches WHERE id = ?"  # noqa: S608
GET_BATCH_BY_KEY = f"SELECT {BATCH_COLUMNS} FROM batches WHERE idempotency_key = ?"  # noqa: S608
LIST_BATCHES = f"""
SELECT {BATCH_COLUMNS} FROM batches
WHERE (:before IS NULL OR id < :before) ORDER BY id DESC LIMIT :limit"""  # noqa: S608
BATCH_COUNTS = "SELECT state, count(*) FROM runs WHERE batch_id = ? GROUP BY state"
# a batch's queued runs, every one in one statement: a run the dispatcher could claim between
# two statements of a cancel (one per run, or per chunk) started behind it
CANCEL_QUEUED_OF_BATCH = WriteAll(
    "SELECT id FROM runs WHERE batch_id = ? AND state = ?",
    """
    UPDATE runs SET state = ?, exit_code = NULL, reason = ?, finished_at = ?, not_before = NULL,
        state_at = ?
    WHERE batch_id = ? AND state = ?
    """,
    GET_RUN,
    4,
)
BATCH_RUNS_IN = "SELECT id FROM runs WHERE batch_id = ? AND state = ?"

_SCHEDULE_VALUES = ", ".join("?" * SCHEDULE_WIDTH)
INSERT_SCHEDULE = f"INSERT INTO schedules ({SCHEDULE_WRITTEN}) VALUES ({_SCHEDULE_VALUES})"  # noqa: S608
# a write of the version it read: nothing when the row changed or went meanwhile
_SCHEDULE_SETS = ", ".join(f"{c.strip()} = ?" for c in SCHEDULE_WRITTEN.split(",")[1:])
UPDATE_SCHEDULE = (
    f"UPDATE schedules SET {_SCHEDULE_SETS}, version = version + 1 "  # noqa: S608
    "WHERE id = ? AND version = ?"
)
# `max_schedules` held by the store: a count and the insert after it, no create between
LOCK_SCHEDULE_COUNT = "SELECT 1"  # one writer at a time already
COUNT_SCHEDULES = "SELECT count(*) FROM schedules"
LIST_SCHEDULES = f"SELECT {SCHEDULE_COLUMNS} FROM schedules ORDER BY id"  # noqa: S608
DELETE_SCHEDULE = "DELETE FROM schedules WHERE id = ?"
# Retention. A run whose job has a TTL of its own expires at finished_at + its retention_s
# (migration 0016's index, its expression and condition spelled alike here, or the index is
# not used); one without, the server's TTL after it ended. Each page after the last one's
# (key, id): a sweep reads each run once, and only what has expired, never every finished
# run older than the shortest TTL (those kept longer were read again at every sweep).
_TIMED = (
    "finished_at IS NOT NULL AND json_valid(spec) "
    "AND json_type(spec, '$.retention_s') IN ('integer', 'real')"
)
_EXPIRY = "finished_at + json_extract(spec, '$.retention_s')"
_TERMINAL = "state IN ('succeeded', 'failed', 'cancelled', 'timed_out')"
EXPIRED = (
    f"SELECT id, {_EXPIRY} FROM runs INDEXED BY runs_expiry "  # noqa: S608
    f"WHERE {_TIMED} AND {_EXPIRY} < ? AND {_TERMINAL} ORDER BY {_EXPIRY}, id LIMIT ?"
)
EXPIRED_AFTER = (
    f"SELECT id, {_EXPIRY} FROM runs INDEXED BY runs_expiry "  # noqa: S608
    f"WHERE {_TIMED} AND {_EXPIRY} < ? AND {_EXPIRY} >= ? AND ({_EXPIRY}, id) > (?, ?) "
    f"AND {_TERMINAL} ORDER BY {_EXPIRY}, id LIMIT ?"
)
UNTIMED_BEFORE = (
    "SELECT id, finished_at FROM runs INDEXED BY runs_finished "  # noqa: S608
    f"WHERE finished_at IS NOT NULL AND finished_at < ? "
    f"AND NOT coalesce(({_TIMED}), 0) AND {_TERMINAL} "
    "ORDER BY finished_at, id LIMIT ?"
)
UNTIMED_BEFORE_AFTER = (
    "SELECT id, finished_at FROM runs INDEXED BY runs_finished "  # noqa: S608
    f"WHERE finished_at IS NOT NULL AND finished_at < ? AND finished_at >= ? "
    f"AND (finished_at, id) > (?, ?) AND NOT coalesce(({_TIMED}), 0) AND {_TERMINAL} "
    "ORDER BY finished_at, id LIMIT ?"
)

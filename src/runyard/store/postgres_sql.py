"""Every SQL statement of the PostgreSQL store, named, in one place (the names logic.py runs)."""

from __future__ import annotations

import hashlib
from typing import Any

from runyard.models import RunFilter
from runyard.store.rows import (
    ATTEMPT_COLUMNS,
    RUN_COLUMNS,
    SCHEDULE_COLUMNS,
    SCHEDULE_WIDTH,
    SCHEDULE_WRITTEN,
)

MIGRATION_LOCK = 7_261_010  # pg_advisory_xact_lock key: servers starting together migrate once
MEMBERSHIP_LOCK = 7_261_011  # with the server id's hash: one registration of an id at a time
SCHEDULER_LOCK = 7_261_012  # pg_try_advisory_lock: the one server that fires schedules

# LISTEN/NOTIFY: sent at commit, so a listener never hears of what it cannot read yet
NOTIFY = "SELECT pg_notify(%s, %s)"


def _tag(schema: str) -> str:
    return hashlib.blake2b(schema.encode(), digest_size=6).hexdigest()


def scoped_channel(channel: str, schema: str | None) -> str:
    """NOTIFY channels are the database's, not a schema's: deployments in different schemas
    of one database each get their own (a hash keeps the name under 63 bytes). The default
    schema keeps the plain names, which servers of earlier versions use."""
    return channel if schema is None else f"{channel}_{_tag(schema)}"


def scoped_lock(key: int, schema: str | None) -> int:
    """Advisory lock keys are the database's too: one per schema (a signed 63-bit key)."""
    if schema is None:
        return key
    digest = hashlib.blake2b(f"{key}:{schema}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") >> 1


CURRENT_SCHEMA = "SELECT current_schema()"


def listen(channel: str) -> str:
    return f'LISTEN "{channel}"'


TRY_LEAD = "SELECT pg_try_advisory_lock(%s)"  # held by the session until it ends
# let go before the session ends: its backend may take a while to notice a closed socket
STOP_LEADING = "SELECT pg_advisory_unlock(%s)"
PING = "SELECT 1"
LEADER_NAME = "runyard-leader:"  # + the server's id: a leadership session's name, before lives
# + the lease token of the life that leads: the session's name since every registration is a
# life of its own (a server id outlives a process; a token names one, and always fits in 63)
LIFE_NAME = "runyard-life:"
# the session holding a one-key advisory lock, if its server's own lease has lapsed
# the leader's session, if the life it is named for holds no live lease (lapsed, or replaced
# by another life of the same id, which renews the id's lease); or, named for its server id by
# an older runyard, if that id's lease lapsed
SILENT_LEADER = f"""
SELECT a.pid FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
  AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
  AND l.classid = %s::bigint::oid AND l.objid = %s::bigint::oid
  AND CASE WHEN a.application_name LIKE '{LIFE_NAME}%%' THEN NOT EXISTS (
        SELECT 1 FROM servers s WHERE a.application_name = '{LIFE_NAME}' || s.token
          AND s.lease_expires_at >= extract(epoch FROM clock_timestamp()))
      ELSE EXISTS (
        SELECT 1 FROM servers s WHERE a.application_name = '{LEADER_NAME}' || s.id
          AND s.lease_expires_at < extract(epoch FROM clock_timestamp())) END
"""  # noqa: S608
END_SESSION = "SELECT pg_terminate_backend(%s, 5000)"  # and wait (up to 5 s) for it to end
# takes a transaction id, so its commit is written to the WAL: does a write go through again?
PROBE_WRITE = "SELECT pg_current_xact_id()"

LOCK_MIGRATIONS = "SELECT pg_advisory_xact_lock(%s)"
CREATE_MIGRATIONS = (
    "CREATE TABLE IF NOT EXISTS schema_migrations "
    "(version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at DOUBLE PRECISION)"
)
APPLIED_MIGRATIONS = "SELECT version FROM schema_migrations"
RECORD_MIGRATION = "INSERT INTO schema_migrations VALUES (%s, %s, %s)"

INSERT_RUN = (
    f"INSERT INTO runs ({RUN_COLUMNS}) VALUES ({', '.join(['%s'] * 21)}) "  # noqa: S608
    "ON CONFLICT (idempotency_key) DO NOTHING RETURNING id"
)
INSERT_RUNS = f"INSERT INTO runs ({RUN_COLUMNS}) VALUES ({', '.join(['%s'] * 21)})"  # noqa: S608
GET_RUN = f"SELECT {RUN_COLUMNS} FROM runs WHERE id = %s"  # noqa: S608
LAST_ATTEMPTS = """
SELECT r.id, CASE WHEN r.state IN ('succeeded', 'failed', 'cancelled', 'timed_out') THEN NULL
  ELSE (SELECT coalesce(max(a.number), 0) FROM attempts a WHERE a.run_id = r.id) END
FROM runs r WHERE r.id IN (SELECT jsonb_array_elements_text(%s::jsonb))
"""
GET_RUN_BY_KEY = f"SELECT {RUN_COLUMNS} FROM runs WHERE idempotency_key = %s"  # noqa: S608


def _list_runs(flt: RunFilter) -> tuple[str, list[Any]]:
    """Newest first from the cursor, one row past the page; filters as bound parameters."""
    where: list[str] = []
    args: list[Any] = []
    for column, value in (("job", flt.job), ("batch_id", flt.batch_id)):
        if value is not None:
            where.append(f"{column} = %s")
            args.append(value)
    if flt.state is not None:
        where.append("state = %s")
        args.append(flt.state.value)
    for key, value in flt.labels:
        where.append("labels ->> %s = %s")
        args.extend([key, value])
    if flt.cursor is not None:
        where.append("id < %s")
        args.append(flt.cursor)
    sql = f"SELECT {RUN_COLUMNS} FROM runs"  # noqa: S608
    sql += (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY id DESC LIMIT %s"
    return sql, [*args, flt.limit + 1]


LIST_RUNS = _list_runs
LOCK_RUN = "SELECT state FROM runs WHERE id = %s FOR UPDATE"
LOCK_RUN_PROGRESS = "SELECT progress_bytes FROM runs WHERE id = %s FOR UPDATE"
# an end locks its run's row before it writes the attempt's, as before (one lock order)
HOLD_RUN = "SELECT 1 FROM runs WHERE id = %s FOR UPDATE"
COUNT_RUNS = "SELECT count(*) FROM runs WHERE state = %s"
COUNT_RUNS_OF_JOB = "SELECT count(*) FROM runs WHERE state = %s AND job = %s"
COUNT_BY_JOB = "SELECT job, count(*) FROM runs WHERE state = %s GROUP BY job"
# The jobs with no free slot come as a JSON array (as for SQLite).
# SKIP LOCKED: several servers claim from one queue without waiting on each other's rows
CLAIM_CANDIDATES = """
SELECT id, job FROM runs
WHERE state = 'queued' AND (not_before IS NULL OR not_before <= %s)
  AND job NOT IN (SELECT jsonb_array_elements_text(%s::jsonb))
ORDER BY priority DESC, id
LIMIT %s
FOR UPDATE SKIP LOCKED
"""
# the claimed run as it now is: nothing to read back. A retry's claim clears its last
# attempt's exit code and reason (a client polling `exit_code` took it for a run over)
CLAIM_RUN = f"""
UPDATE runs SET state = 'running', attempt = attempt + 1, not_before = NULL,
    exit_code = NULL, reason = NULL,
    started_at = coalesce(started_at, GREATEST(%s, created_at)),
    state_at = GREATEST(%s, created_at)
WHERE id = %s AND state = 'queued'
RETURNING {RUN_COLUMNS}
"""  # noqa: S608
# A claim with no job's limit in play, in one statement (RETURNING's order is not the
# queue's: the logic sorts them); rows another server holds are skipped, as in a claim. The
# rows are picked once, in a CTE: as `id IN (subquery)` the planner may run the LIMIT again
# per row and take more than asked.
_TAKEN_COLUMNS = ", ".join(f"runs.{c}" for c in RUN_COLUMNS.split(", "))
CLAIM_NEXT = f"""
WITH taken AS MATERIALIZED (
    SELECT id FROM runs
    WHERE state = 'queued' AND (not_before IS NULL OR not_before <= %(now)s)
    ORDER BY priority DESC, id
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
)
-- never before the run's own creation: a claim's `now` is read before its transaction,
-- which can take a run submitted (through another server) after that moment
UPDATE runs SET state = 'running', attempt = attempt + 1, not_before = NULL,
    exit_code = NULL, reason = NULL,
    started_at = coalesce(started_at, GREATEST(%(now)s, runs.created_at)),
    state_at = GREATEST(%(now)s, runs.created_at)
FROM taken WHERE runs.id = taken.id AND runs.state = 'queued'
RETURNING {_TAKEN_COLUMNS}
"""  # noqa: S608
NEXT_DUE = (
    "SELECT min(not_before) FROM runs "
    "WHERE state = 'queued' AND not_before IS NOT NULL AND not_before > %s"
)
INSERT_ATTEMPT = f"INSERT INTO attempts ({ATTEMPT_COLUMNS}) VALUES ({', '.join(['%s'] * 15)})"  # noqa: S608
GET_ATTEMPTS = f"SELECT {ATTEMPT_COLUMNS} FROM attempts WHERE run_id = %s ORDER BY number"  # noqa: S608
ACTIVE_ATTEMPTS = (
    f"SELECT {ATTEMPT_COLUMNS} FROM attempts WHERE state IN ('starting', 'running') "  # noqa: S608
    "AND (%s::text IS NULL OR host = %s) ORDER BY run_id, number"
)
HELD_ATTEMPTS = """
SELECT a.run_id, a.number, r.job FROM attempts a JOIN runs r ON r.id = a.run_id
WHERE a.state IN ('starting', 'running') AND a.host = %s
"""
SERVER_COLUMNS = "id, url, token, capacity, started_at, heartbeat_at, lease_expires_at"
LOCK_SERVER_ID = f"SELECT pg_advisory_xact_lock({MEMBERSHIP_LOCK}, hashtext(%s))"
GET_SERVER = f"SELECT {SERVER_COLUMNS} FROM servers WHERE id = %s"  # noqa: S608
GET_SERVER_FOR_UPDATE = f"{GET_SERVER} FOR UPDATE"
GET_SERVER_INSTANCE = "SELECT instance FROM server_instances WHERE id = %s"
SET_SERVER_INSTANCE = (
    "INSERT INTO server_instances (instance, id) VALUES (%s, %s) "
    "ON CONFLICT (id) DO UPDATE SET instance = excluded.instance"
)
INSERT_SERVER = f"INSERT INTO servers ({SERVER_COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s, %s)"  # noqa: S608
UPDATE_SERVER = """
UPDATE servers SET url = %s, token = %s, capacity = %s, started_at = %s, heartbeat_at = %s,
    lease_expires_at = %s, previous_expires_at = %s
WHERE id = %s
"""
# a new life of a server id holds every attempt of the id nobody settled (those its
# supervisor still runs it adopts; the rest it settles once the life it replaced is fenced)
RETOKEN_ATTEMPTS = """
UPDATE attempts SET lease_token = %s
WHERE host = %s AND lease_token <> %s AND state IN ('starting', 'running')
"""
RENEW_SERVER = """
UPDATE servers SET heartbeat_at = %s, lease_expires_at = %s
WHERE id = %s AND token = %s AND lease_expires_at > %s
"""
LIVE_SERVERS = f"SELECT {SERVER_COLUMNS} FROM servers WHERE lease_expires_at > %s ORDER BY id"  # noqa: S608
# attempts whose claiming lease ended before the cutoff: their server's current one, or, under
# a token it replaced, the lease that registration replaced (which ended after any older one)
ORPHANED_ATTEMPTS = f"""
SELECT {", ".join("a." + c.strip() for c in ATTEMPT_COLUMNS.split(","))} FROM attempts a
LEFT JOIN servers s ON s.id = a.host
WHERE a.state IN ('starting', 'running') AND a.lease_token IS NOT NULL AND (s.id IS NULL
    OR CASE WHEN s.token = a.lease_token THEN s.lease_expires_at
            ELSE coalesce(s.previous_expires_at, 0) END <= %s)
ORDER BY a.run_id
"""  # noqa: S608
ATTEMPT_STARTED = """
UPDATE attempts SET state = 'running', pid = %s, pgid = %s, proc_start_time = %s, started_at = %s
WHERE run_id = %s AND number = %s AND state = 'starting'
"""
END_ATTEMPT = """
UPDATE attempts SET state = %s, ended_at = %s, exit_code = %s, signal = %s, outcome = %s,
    peak_rss_kb = %s, pid = coalesce(pid, %s), started_at = coalesce(started_at, %s)
WHERE run_id = %s AND number = %s AND state IN ('starting', 'running')
    AND (%s::text IS NULL OR lease_token = %s)
RETURNING host, (SELECT state FROM runs WHERE id = %s),
    (SELECT cancel_requested FROM runs WHERE id = %s)
"""
# the ended run as it now is: nothing to read back
END_RUN = f"""
UPDATE runs SET state = %s, exit_code = %s, reason = %s, finished_at = %s, not_before = %s,
    state_at = %s
WHERE id = %s AND state = %s
RETURNING {RUN_COLUMNS}
"""  # noqa: S608
SET_CANCEL_REQUESTED = "UPDATE runs SET cancel_requested = TRUE WHERE id = %s AND state = 'running'"
DELETE_RUN = (
    "DELETE FROM runs WHERE id = %s AND state IN ('succeeded', 'failed', 'cancelled', 'timed_out')"
)
SET_PROGRESS = "UPDATE runs SET progress = %s WHERE id = %s"
SAVE_PROGRESS = """
UPDATE runs SET progress = coalesce(%s::jsonb, progress), progress_skipped = progress_skipped + %s,
    progress_bytes = progress_bytes + %s
WHERE id = %s
"""
SET_PROGRESS_OFFSET = "UPDATE attempts SET progress_offset = %s WHERE run_id = %s AND number = %s"
GET_PROGRESS_OFFSET = "SELECT progress_offset FROM attempts WHERE run_id = %s AND number = %s"
# numbered in the statement that adds it: one statement per event
ADD_EVENT = (
    "INSERT INTO run_events (run_id, seq, at, kind, data) "
    "SELECT %s, coalesce(max(seq), 0) + 1, %s::double precision, %s, %s::jsonb "
    "FROM run_events WHERE run_id = %s"
)
# a state event: the same statement (SQLite writes its own by trigger)
ADD_STATE_EVENT = ADD_EVENT
ADD_FIRST_EVENTS = (
    "INSERT INTO run_events (run_id, seq, at, kind, data) "
    "VALUES (%s, 1, %s::double precision, 'state', %s::jsonb)"
)
LIST_EVENTS = (  # with its data's size: a page may be bounded in bytes (store/progress.py)
    "SELECT run_id, seq, at, kind, data, octet_length(data::text) FROM run_events "
    "WHERE run_id = %s AND seq > %s ORDER BY seq LIMIT %s"
)
LAST_EVENT_SEQ = "SELECT coalesce(max(seq), 0) FROM run_events WHERE run_id = %s"
BATCH_COLUMNS = "id, job, size, created_at, request, idempotency_key"
INSERT_BATCH = f"INSERT INTO batches ({BATCH_COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s)"  # noqa: S608
INSERT_BATCH_KEYED = INSERT_BATCH + " ON CONFLICT (idempotency_key) DO NOTHING RETURNING id"
GET_BATCH = f"SELECT {BATCH_COLUMNS} FROM batches WHERE id = %s"  # noqa: S608
GET_BATCH_BY_KEY = f"SELECT {BATCH_COLUMNS} FROM batches WHERE idempotency_key = %s"  # noqa: S608
LIST_BATCHES = f"""
SELECT {BATCH_COLUMNS} FROM batches
WHERE (%(before)s::text IS NULL OR id < %(before)s) ORDER BY id DESC LIMIT %(limit)s"""  # noqa: S608
BATCH_COUNTS = "SELECT state, count(*) FROM runs WHERE batch_id = %s GROUP BY state"
# a batch's queued runs, every one in one statement: a run the dispatcher could claim between
# two statements of a cancel (one per run, or per chunk) started behind it
CANCEL_QUEUED_OF_BATCH = f"""
UPDATE runs SET state = %s, exit_code = NULL, reason = %s, finished_at = %s, not_before = NULL,
    state_at = %s
WHERE batch_id = %s AND state = %s
RETURNING {RUN_COLUMNS}
"""  # noqa: S608
BATCH_RUNS_IN = "SELECT id FROM runs WHERE batch_id = %s AND state = %s"
_SCHEDULE_VALUES = ", ".join(["%s"] * SCHEDULE_WIDTH)
INSERT_SCHEDULE = f"INSERT INTO schedules ({SCHEDULE_WRITTEN}) VALUES ({_SCHEDULE_VALUES})"  # noqa: S608
# a write of the version it read: nothing when the row changed or went meanwhile
_SCHEDULE_SETS = ", ".join(f"{c.strip()} = %s" for c in SCHEDULE_WRITTEN.split(",")[1:])
UPDATE_SCHEDULE = (
    f"UPDATE schedules SET {_SCHEDULE_SETS}, version = version + 1 "  # noqa: S608
    "WHERE id = %s AND version = %s"
)
# `max_schedules` held by the store: a count and the insert after it, no create between
LOCK_SCHEDULE_COUNT = "LOCK TABLE schedules IN SHARE ROW EXCLUSIVE MODE"  # creates, one at a time
COUNT_SCHEDULES = "SELECT count(*) FROM schedules"
LIST_SCHEDULES = f"SELECT {SCHEDULE_COLUMNS} FROM schedules ORDER BY id"  # noqa: S608
DELETE_SCHEDULE = "DELETE FROM schedules WHERE id = %s"
# Retention (sqlite_sql.py says why): migration 0010's index, its expression and condition
# spelled alike here. A TTL is clamped before the cast: a number too large for a double
# (jsonb keeps any) would make the end of its run fail to be written.
_TIMED = "finished_at IS NOT NULL AND jsonb_typeof(spec -> 'retention_s') = 'number'"
_EXPIRY = "finished_at + LEAST((spec ->> 'retention_s')::numeric, 1e15)::double precision"
_TERMINAL = "state IN ('succeeded', 'failed', 'cancelled', 'timed_out')"
EXPIRED = (
    f"SELECT id, {_EXPIRY} FROM runs "  # noqa: S608
    f"WHERE {_TIMED} AND {_EXPIRY} < %s AND {_TERMINAL} ORDER BY {_EXPIRY}, id LIMIT %s"
)
EXPIRED_AFTER = (
    f"SELECT id, {_EXPIRY} FROM runs "  # noqa: S608
    f"WHERE {_TIMED} AND {_EXPIRY} < %s AND {_EXPIRY} >= %s AND ({_EXPIRY}, id) > (%s, %s) "
    f"AND {_TERMINAL} ORDER BY {_EXPIRY}, id LIMIT %s"
)
UNTIMED_BEFORE = (
    "SELECT id, finished_at FROM runs "  # noqa: S608
    f"WHERE finished_at IS NOT NULL AND finished_at < %s "
    f"AND NOT coalesce(({_TIMED}), false) AND {_TERMINAL} "
    "ORDER BY finished_at, id LIMIT %s"
)
UNTIMED_BEFORE_AFTER = (
    "SELECT id, finished_at FROM runs "  # noqa: S608
    "WHERE finished_at IS NOT NULL AND finished_at < %s AND finished_at >= %s "
    f"AND (finished_at, id) > (%s, %s) AND NOT coalesce(({_TIMED}), false) AND {_TERMINAL} "
    "ORDER BY finished_at, id LIMIT %s"
)

"""Applying every migration yields the schema the SQL expects, on each backend."""

from __future__ import annotations

import re
import sqlite3
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from runyard.store import postgres_sql as pq
from runyard.store import sqlite_sql as q
from runyard.store.migrations import migration_files, sqlite_statements
from runyard.store.postgres import PostgresStore
from runyard.store.rows import run_to_row
from runyard.store.schema_version import known_version
from runyard.store.sqlite import SQLiteStore
from runyard.store.sqlite_steps import ReadBack, TakeNext, WriteAll
from tests.integration.conftest import POSTGRES
from tests.integration.test_store_contract import make_run, succeeded

pytestmark = pytest.mark.anyio

# Every column each query module names, by table: the schema must hold at least these.
EXPECTED = {
    "runs": q.RUN_COLUMNS,
    "attempts": q.ATTEMPT_COLUMNS,
    "schedules": q.SCHEDULE_COLUMNS,
    "servers": q.SERVER_COLUMNS,
    "batches": "id, job, size, created_at, request",
    "run_events": "run_id, seq, at, kind, data",
}


def columns(names: str) -> set[str]:
    return {c.strip() for c in names.split(",")}


async def sqlite_schema(path: Path) -> tuple[dict[str, set[str]], list[int]]:
    store = SQLiteStore(path)
    await store.open()
    await store.close()
    conn = sqlite3.connect(path)
    tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
    schema = {t: {r[1] for r in conn.execute(f"PRAGMA table_info({t})")} for t in tables}
    versions = [v for (v,) in conn.execute(q.APPLIED_MIGRATIONS)]
    conn.close()
    return schema, versions


@pytest.fixture
def pg_schema() -> Iterator[str]:
    schema = f"t_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(POSTGRES, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    yield schema
    with psycopg.connect(POSTGRES, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA {schema} CASCADE")


async def postgres_schema(schema: str) -> tuple[dict[str, set[str]], list[int]]:
    store = PostgresStore(POSTGRES, schema=schema, max_size=1)
    await store.open()
    await store.close()
    found: dict[str, set[str]] = {}
    with psycopg.connect(POSTGRES, autocommit=True) as conn:
        for table, column in conn.execute(
            "SELECT table_name, column_name FROM information_schema.columns "
            "WHERE table_schema = %s",
            (schema,),
        ):
            found.setdefault(table, set()).add(column)
        versions = [
            v
            for (v,) in conn.execute(f"SELECT version FROM {schema}.schema_migrations")  # noqa: S608
        ]
    return found, versions


async def test_sqlite_schema_matches_queries(tmp_path: Path) -> None:
    schema, versions = await sqlite_schema(tmp_path / "m.db")
    for table, names in EXPECTED.items():
        assert columns(names) <= schema[table], table
    assert versions == list(range(1, len(versions) + 1))
    conn = sqlite3.connect(tmp_path / "m.db")
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


async def test_postgres_schema_matches_queries(pg_schema: str) -> None:
    schema, versions = await postgres_schema(pg_schema)
    for table, names in EXPECTED.items():
        assert columns(names) <= schema[table], table
    assert columns(pq.RUN_COLUMNS) == columns(q.RUN_COLUMNS)  # one row layout (rows.py)
    assert versions == list(range(1, len(versions) + 1))


async def test_both_backends_migrate_to_the_same_tables_and_columns(
    tmp_path: Path, pg_schema: str
) -> None:
    lite, _ = await sqlite_schema(tmp_path / "m.db")
    pg, _ = await postgres_schema(pg_schema)
    # each keeps its versions under its own name (SQLite's moved at 0008: sqlite_sql.py)
    assert lite.pop("schema_versions") == pg.pop("schema_migrations")
    assert pg == lite


async def test_postgres_migrations_are_idempotent(pg_schema: str) -> None:
    first, versions = await postgres_schema(pg_schema)
    again, versions_again = await postgres_schema(pg_schema)  # applies nothing a second time
    assert (again, versions_again) == (first, versions)


async def test_hot_queries_walk_their_indexes(tmp_path: Path) -> None:
    """A claim or a due-time look-up must never scan or sort the whole queue."""
    store = SQLiteStore(tmp_path / "p.db")
    await store.open()
    await store.close()
    conn = sqlite3.connect(tmp_path / "p.db")

    def plan(sql: str, args: tuple[object, ...] | dict[str, object]) -> str:
        return " | ".join(row[3] for row in conn.execute("EXPLAIN QUERY PLAN " + sql, args))

    for claim in (
        plan(q.CLAIM_CANDIDATES, (0.0, "[]", 8)), plan(q.CLAIM_NEXT.pick, {"now": 0.0, "limit": 8}),
    ):  # fmt: skip
        assert "USING INDEX runs_queue" in claim
        assert "TEMP B-TREE" not in claim
    assert "USING INDEX runs_due" in plan(q.NEXT_DUE, (0.0,))


async def test_sqlite_writes_each_state_event_in_the_statement_that_changes_the_state(
    tmp_path: Path,
) -> None:
    """No INSERT of the store's own for a state event (migration 0008's triggers write it, at
    the time the statement sets), and the events are those PostgreSQL's are (the contract)."""
    store = SQLiteStore(tmp_path / "t.db")
    await store.open()
    seen: list[str] = []
    conn = store._conn
    assert conn is not None
    await store._thread().call(lambda: conn.set_trace_callback(seen.append))
    run, _ = await store.insert_run(make_run(created=1000.0))
    await store.claim(1, {}, now=1500.0, host="h")
    await store.end_attempt(run.id, 1, succeeded(2000.0))
    await store._thread().call(lambda: conn.set_trace_callback(None))
    events = [
        (e.seq, e.at, e.data["from"], e.data["to"]) for e in await store.list_events(run.id, 0)
    ]
    await store.close()
    assert events == [
        (1, 1000.0, None, "queued"), (2, 1500.0, "queued", "running"),
        (3, 2000.0, "running", "succeeded"),
    ]  # fmt: skip
    own = [s for s in seen if s.lstrip().upper().startswith("INSERT INTO RUN_EVENTS")]
    assert own == []
    assert any(s.lstrip().startswith("UPDATE runs") for s in seen)  # it saw the store's writes


async def test_a_sqlite_database_from_before_the_triggers_numbers_its_events_on(
    tmp_path: Path,
) -> None:
    """A run queued by a version before migration 0008 (its first event written by the
    server, no `state_at`) goes on from event 2 once the database is migrated."""
    path = tmp_path / "old.db"
    conn = _before_0008(path)
    run = make_run(created=1000.0)
    conn.execute(q.INSERT_RUNS, run_to_row(run))
    conn.execute(
        "INSERT INTO run_events VALUES (?, 1, 1000.0, 'state', ?)",
        (run.id, '{"from":null,"to":"queued","attempt":0,"exit_code":null,"reason":null}'),
    )
    conn.close()
    store = SQLiteStore(path)
    await store.open()
    try:
        await store.claim(1, {}, now=1500.0, host="h")
        await store.end_attempt(run.id, 1, succeeded(2000.0))
        events = [(e.seq, e.at, e.data["to"]) for e in await store.list_events(run.id, 0)]
    finally:
        await store.close()
    assert events == [(1, 1000.0, "queued"), (2, 1500.0, "running"), (3, 2000.0, "succeeded")]


async def test_sqlite_refuses_a_database_a_newer_runyard_migrated(tmp_path: Path) -> None:
    path = tmp_path / "newer.db"
    store = SQLiteStore(path)
    await store.open()
    await store.close()
    known = max(v for v, _, _ in migration_files("sqlite"))
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute(q.RECORD_MIGRATION, (known + 1, f"{known + 1:04d}_future.sql", 0.0))
    conn.close()
    store = SQLiteStore(path)
    with pytest.raises(RuntimeError, match=f"schema version {known + 1}.*up to {known}"):
        await store.open()
    await store.close()


def _before_0008(path: Path) -> sqlite3.Connection:
    """A database as a runyard from before migration 0008 left it (its versions' table then)."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute(
        "CREATE TABLE schema_migrations "
        "(version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at REAL NOT NULL)"
    )
    for version, name, sql in migration_files("sqlite"):
        if version >= 8:
            break
        for statement in sqlite_statements(sql):
            conn.execute(statement)
        conn.execute("INSERT INTO schema_migrations VALUES (?, ?, ?)", (version, name, 0.0))
    return conn


async def test_a_runyard_from_before_0008_cannot_start_on_a_migrated_database(
    tmp_path: Path,
) -> None:
    """What a runyard from before 0008 does first at start-up: create its (old) table of
    versions if missing and apply what it does not find there. On a database 0008 migrated
    it finds none, and stops at the first (rolled back: nothing changes), instead of
    serving with statements that would write every state event twice."""
    path = tmp_path / "up.db"
    _before_0008(path).close()
    store = SQLiteStore(path)
    await store.open()
    await store.close()
    conn = sqlite3.connect(path, isolation_level=None)
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert "schema_migrations" not in tables
    assert [v for (v,) in conn.execute(q.APPLIED_MIGRATIONS)] == list(range(1, known_version() + 1))
    conn.execute("BEGIN IMMEDIATE")  # the old server's migration, as it ran it
    conn.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations "
        "(version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at REAL NOT NULL)"
    )
    assert conn.execute("SELECT version FROM schema_migrations").fetchall() == []
    _, _, first = migration_files("sqlite")[0]
    with pytest.raises(sqlite3.OperationalError, match="already exists"):
        for statement in sqlite_statements(first):
            conn.execute(statement)
    conn.execute("ROLLBACK")
    conn.close()


def test_every_sqlite_statement_that_changes_a_state_sets_state_at() -> None:
    """The update trigger of migration 0008 dates the event with `state_at`: a statement that
    changed the state without setting it would date the event wrongly, or fail."""

    def sets(sql: object) -> str:  # what an UPDATE of runs sets ("" for anything else)
        if isinstance(sql, ReadBack | TakeNext | WriteAll):  # run as several: its write
            sql = sql.take if isinstance(sql, TakeNext) else sql.sql
        found = (
            re.search(r"UPDATE runs SET (.*?)\bWHERE\b", sql, re.S)
            if isinstance(sql, str)
            else None
        )
        return found.group(1) if found else ""

    changing = {
        name: sets(sql)
        for name, sql in vars(q).items()
        if not name.startswith("_") and "state = " in sets(sql)
    }
    assert set(changing) == {"CLAIM_RUN", "CLAIM_NEXT", "END_RUN", "CANCEL_QUEUED_OF_BATCH"}
    for name, assigned in changing.items():
        assert "state_at = " in assigned, name


async def test_an_exit_code_an_older_version_stored_damaged_reads_as_null_in_events(
    tmp_path: Path,
) -> None:
    """As rows._int reads it in the run (the trigger copies the row, not the model)."""
    path = tmp_path / "d.db"
    store = SQLiteStore(path)
    await store.open()
    run, _ = await store.insert_run(make_run(created=1000.0))
    await store.close()
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("UPDATE runs SET exit_code = 'x1' WHERE id = ?", (run.id,))
    conn.close()
    store = SQLiteStore(path)
    await store.open()
    try:
        (claim,) = await store.claim(1, {}, now=1500.0, host="h")
        events = await store.list_events(run.id, 1)
    finally:
        await store.close()
    assert claim.run.exit_code is None
    assert [(e.data["to"], e.data["exit_code"]) for e in events] == [("running", None)]


def _texts(sql: object) -> list[object]:
    """The statements a named query runs (several for one SQLite runs as several)."""
    if isinstance(sql, ReadBack):
        return [sql.sql] if sql.read is None else [sql.sql, sql.read]
    if isinstance(sql, TakeNext):
        return [sql.pick, sql.take, sql.read]
    if isinstance(sql, WriteAll):
        return [sql.pick, sql.sql, sql.read]
    return [sql]


def test_no_sqlite_write_of_runs_returns_rows() -> None:
    """RETURNING beside the triggers of `runs` costs about four times the statement: a write
    whose row the logic reads runs without it, the row read after (sqlite_steps.py)."""
    writes = {
        name: text
        for name, sql in vars(q).items()
        for text in _texts(sql)
        if isinstance(text, str) and re.search(r"\b(UPDATE|INSERT INTO) runs\b", text)
    }
    assert {"INSERT_RUN", "INSERT_RUNS", "CLAIM_RUN", "CLAIM_NEXT", "END_RUN",
            "CANCEL_QUEUED_OF_BATCH"} <= set(writes)  # fmt: skip
    for name, text in writes.items():
        assert "RETURNING" not in text.upper(), name

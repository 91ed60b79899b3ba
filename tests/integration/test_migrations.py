"""Applying every migration yields the schema the SQL expects."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from runyard.store import sqlite_sql as q
from runyard.store.sqlite import SQLiteStore

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def test_sqlite_schema_matches_queries(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "m.db")
    await store.open()
    await store.close()
    conn = sqlite3.connect(tmp_path / "m.db")
    for table, columns in (("runs", q.RUN_COLUMNS), ("attempts", q.ATTEMPT_COLUMNS)):
        have = {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}
        assert {c.strip() for c in columns.split(",")} <= have
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    versions = [v for (v,) in conn.execute("SELECT version FROM schema_migrations")]
    assert versions == sorted(versions)
    assert versions == list(range(1, len(versions) + 1))
    assert {"run_events"} <= {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}


async def test_hot_queries_walk_their_indexes(tmp_path: Path) -> None:
    """A claim or a due-time look-up must never scan or sort the whole queue."""
    store = SQLiteStore(tmp_path / "p.db")
    await store.open()
    await store.close()
    conn = sqlite3.connect(tmp_path / "p.db")

    def plan(sql: str, args: tuple[object, ...]) -> str:
        return " | ".join(row[3] for row in conn.execute("EXPLAIN QUERY PLAN " + sql, args))

    claim = plan(q.CLAIM_CANDIDATES, (0.0, "[]", 8))
    assert "USING INDEX runs_queue" in claim
    assert "TEMP B-TREE" not in claim
    assert "USING INDEX runs_due" in plan(q.NEXT_DUE, ())

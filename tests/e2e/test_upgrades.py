"""A database a newer runyard has migrated: `runyard serve` refuses it before anything starts,
in one line that says what to do, and leaves it as it found it."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from runyard.store import sqlite_sql as q
from runyard.store.schema_version import known_version, refusal_of
from runyard.store.sqlite import SQLiteStore
from tests.support import free_port

pytestmark = pytest.mark.e2e


def _migrated_by_a_newer_runyard(path: Path) -> int:
    async def create() -> None:
        store = SQLiteStore(path)
        await store.open()
        await store.close()

    asyncio.run(create())
    newer = known_version() + 1
    with sqlite3.connect(path, isolation_level=None) as conn:
        conn.execute(q.RECORD_MIGRATION, (newer, f"{newer:04d}_future.sql", 0.0))
    return newer


def test_serve_refuses_a_database_a_newer_runyard_migrated(write_job, jobs_dir, tmp_path) -> None:
    write_job("true", 'command = ["true"]\n')
    data = tmp_path / "d"
    data.mkdir()
    db = data / "runyard.db"
    newer = _migrated_by_a_newer_runyard(db)
    before = db.read_bytes()
    done = subprocess.run(
        [sys.executable, "-m", "runyard", "serve", "--jobs", str(jobs_dir),
         "--data-dir", str(data), "--port", str(free_port())],
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": ":".join(sys.path),
             "RUNYARD_LOG_FORMAT": "json"},
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    out = done.stdout + done.stderr
    assert done.returncode == 2, out
    assert "Traceback" not in out
    said = f"runyard: refusing to start: the database {db} has schema version {newer}"
    assert said in done.stderr
    logged = [json.loads(line) for line in done.stderr.splitlines() if line.startswith("{")]
    assert [e["event"] for e in logged] == ["refusing_to_start"]
    assert f"knows versions up to {newer - 1}" in logged[0]["reason"]
    assert db.read_bytes() == before  # nothing migrated, nothing written
    assert not (data / "supervisor.sock").exists()  # nothing started


def test_the_check_leaves_other_databases_to_the_store(tmp_path: Path) -> None:
    """No file, a file that is not a database, one from before the table of versions, one of
    this version: no refusal here (the store's own opening upgrades, or says what is wrong)."""
    assert refusal_of(tmp_path / "missing.db") is None
    assert not (tmp_path / "missing.db").exists()
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"not a database at all" * 100)
    assert refusal_of(junk) is None
    assert junk.read_bytes() == b"not a database at all" * 100
    legacy = tmp_path / "legacy.db"
    with sqlite3.connect(legacy) as conn:
        conn.execute("CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY)")
        conn.execute("INSERT INTO schema_migrations VALUES (99)")
    assert refusal_of(legacy) is None
    current = tmp_path / "current.db"
    newer = _migrated_by_a_newer_runyard(current)
    assert refusal_of(current) is not None
    with sqlite3.connect(current, isolation_level=None) as conn:
        conn.execute("DELETE FROM schema_versions WHERE version = ?", (newer,))
    assert refusal_of(current) is None

"""What `runyard serve` must not start on (a database a newer runyard migrated, a file that is
not a readable database, a data directory it cannot use) is refused before anything starts,
in one line that says what to do, and left as it was found."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from runyard.clock import new_id
from runyard.models import Run, RunState
from runyard.store import sqlite_sql as q
from runyard.store.schema_version import NewerSchemaError, known_version, refusal_of
from runyard.store.sqlite import SQLiteStore
from runyard.store.wal_check import wal_refusal
from tests.support import free_port

pytestmark = pytest.mark.e2e


def _current(path: Path) -> None:
    async def create() -> None:
        store = SQLiteStore(path)
        await store.open()
        await store.close()

    asyncio.run(create())


def _migrated_by_a_newer_runyard(path: Path) -> int:
    _current(path)
    newer = known_version() + 1
    with sqlite3.connect(path, isolation_level=None) as conn:
        conn.execute(q.RECORD_MIGRATION, (newer, f"{newer:04d}_future.sql", 0.0))
    return newer


def _serve(jobs_dir: Path, data: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "runyard", "serve", "--jobs", str(jobs_dir),
         "--data-dir", str(data), "--port", str(free_port())],
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": ":".join(sys.path),
             "RUNYARD_LOG_FORMAT": "json"},
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def _refused(
    done: subprocess.CompletedProcess[str], data: Path, said: str, *, socket_left: bool = False
) -> str:
    """Refused in one line and one log line, status 2, nothing started; the log line's reason."""
    out = done.stdout + done.stderr
    assert done.returncode == 2, out
    assert "Traceback" not in out
    assert f"runyard: refusing to start: {said}" in done.stderr
    logged = [json.loads(line) for line in done.stderr.splitlines() if line.startswith("{")]
    assert [e["event"] for e in logged] == ["refusing_to_start"]
    if not socket_left:  # no supervisor started (where the socket was in the way, it stays)
        assert not (data / "supervisor.sock").exists()
    return str(logged[0]["reason"])


@pytest.fixture
def data(write_job, tmp_path: Path) -> Path:
    write_job("true", 'command = ["true"]\n')
    path = tmp_path / "d"
    path.mkdir()
    return path


def test_serve_refuses_a_database_a_newer_runyard_migrated(jobs_dir, data) -> None:
    db = data / "runyard.db"
    newer = _migrated_by_a_newer_runyard(db)
    before = db.read_bytes()
    done = _serve(jobs_dir, data)
    reason = _refused(done, data, f"the database {db} has schema version {newer}")
    assert f"knows versions up to {newer - 1}" in reason
    assert db.read_bytes() == before  # nothing migrated, nothing written


@pytest.mark.parametrize("damage", ["not_a_database", "damaged_pages"])
def test_serve_refuses_a_database_it_cannot_read(jobs_dir, data, damage: str) -> None:
    db = data / "runyard.db"
    if damage == "not_a_database":
        db.write_bytes(b"not a database at all" * 100)
    else:
        _current(db)
        damaged = bytearray(db.read_bytes())
        damaged[4096:] = bytes([0xAB]) * (len(damaged) - 4096)  # every page past the first
        db.write_bytes(bytes(damaged))
    before = db.read_bytes()
    reason = _refused(_serve(jobs_dir, data), data, f"the database {db} cannot be read")
    assert "Restore it from a backup" in reason
    assert db.read_bytes() == before


def _runs_only_in_its_wal(db: Path, into: Path, runs: int = 1) -> None:
    """A store with runs in it, each written by a transaction of its own, copied while open
    (as a server killed outright leaves it): the runs are in the write-ahead log alone, not
    yet in the database file."""

    async def fill() -> None:
        store = SQLiteStore(db)
        await store.open()
        for _ in range(runs):
            await store.insert_run(Run(
                id=new_id(), job="true", params={}, state=RunState.QUEUED, priority=0,
                created_at=1000.0, spec={"name": "true", "command": ["true"]},
            ))  # fmt: skip
        shutil.copy(db, into / "runyard.db")
        shutil.copy(db.with_name(f"{db.name}-wal"), into / "runyard.db-wal")
        await store.close()

    asyncio.run(fill())


def test_serve_refuses_a_write_ahead_log_it_would_drop(jobs_dir, data, tmp_path: Path) -> None:
    """A probe: a WAL whose header was damaged was read by SQLite as empty, and the server
    started ready with none of its runs."""
    db, wal = data / "runyard.db", data / "runyard.db-wal"
    _runs_only_in_its_wal(tmp_path / "live.db", data)
    with wal.open("r+b") as fh:
        fh.seek(24)  # the header's checksum
        fh.write(bytes(8))
    before = wal.read_bytes(), db.read_bytes()
    said = f"the database's write-ahead log {wal} is damaged (its header fails its checksum)"
    reason = _refused(_serve(jobs_dir, data), data, said)
    assert "pages the database file does not" in reason and "move runyard.db-wal aside" in reason
    assert (wal.read_bytes(), db.read_bytes()) == before  # nothing dropped, nothing written


def _damage_frame(wal: Path, frame: int) -> None:
    """One byte flipped in the page that frame `frame` (from 1) of the log holds."""
    page = int.from_bytes(wal.read_bytes()[8:12], "big")
    with wal.open("r+b") as fh:
        fh.seek(32 + (frame - 1) * (24 + page) + 24 + 100)
        byte = fh.read(1)
        fh.seek(-1, os.SEEK_CUR)
        fh.write(bytes([byte[0] ^ 0xFF]))


def _frames(wal: Path) -> int:
    data = wal.read_bytes()
    return (len(data) - 32) // (24 + int.from_bytes(data[8:12], "big"))


def test_serve_refuses_a_write_ahead_log_whose_frame_would_drop_later_transactions(
    jobs_dir, data, tmp_path: Path
) -> None:
    """A probe: one byte flipped in a frame of the log (its header sound), and SQLite read the
    log only up to it: every run accepted after it was a 404, the server ready."""
    db, wal = data / "runyard.db", data / "runyard.db-wal"
    _runs_only_in_its_wal(tmp_path / "live.db", data, runs=20)
    _damage_frame(wal, 1)
    before = wal.read_bytes(), db.read_bytes()
    said = f"the database's write-ahead log {wal} is damaged (its frame 1 fails its checksum)"
    reason = _refused(_serve(jobs_dir, data), data, said)
    assert "committed after it would be dropped" in reason, reason
    assert "move runyard.db-wal aside" in reason
    assert (wal.read_bytes(), db.read_bytes()) == before  # nothing dropped, nothing written


def test_a_log_torn_in_its_last_transaction_is_read_as_sqlite_reads_it(
    jobs_dir, data, tmp_path: Path
) -> None:
    """The last transaction's frames, torn as a crash may leave them (never acknowledged): no
    refusal, and the runs committed before it are all there."""
    db, wal = data / "runyard.db", data / "runyard.db-wal"
    _runs_only_in_its_wal(tmp_path / "live.db", data, runs=20)
    _damage_frame(wal, _frames(wal))
    assert wal_refusal(db) is None
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT count(*) FROM runs").fetchone() == (19,)


def test_serve_refuses_a_data_directory_it_cannot_use(jobs_dir, tmp_path: Path) -> None:
    in_the_way = tmp_path / "d"
    in_the_way.write_text("a file where the data directory should be")
    said = f"the data directory {in_the_way} cannot be used: File exists"
    assert _refused(_serve(jobs_dir, in_the_way), tmp_path, said) == said
    assert in_the_way.read_text() == "a file where the data directory should be"


def test_serve_refuses_a_data_directory_it_cannot_write(jobs_dir, data) -> None:
    """A probe: a read-only data directory (a filesystem remounted read-only after an error)
    failed the start with a traceback, from the store (it cannot open the database) or, a
    database there, from the supervisor's log; or the store opened read-only, for good."""
    if shutil.which("chattr") is None:
        pytest.skip("chattr is needed to make a directory read-only for root")
    _current(data / "runyard.db")
    subprocess.run(["chattr", "+i", str(data)], check=True)
    try:
        done = _serve(jobs_dir, data)
    finally:
        subprocess.run(["chattr", "-i", str(data)], check=True)
    _refused(done, data, f"the data directory {data} cannot be written: Operation not permitted")


def test_a_table_of_versions_runyard_did_not_make_is_refused_not_a_crash(
    tmp_path: Path,
) -> None:
    """Versions that are not numbers (a table made by hand, by something else) are refused in
    words, before start and by the store's opening, not by a TypeError from comparing them."""
    odd = tmp_path / "odd.db"
    with sqlite3.connect(odd) as conn:
        conn.execute("CREATE TABLE schema_versions (version TEXT, name TEXT, applied_at REAL)")
        conn.execute("INSERT INTO schema_versions VALUES ('next', 'x', 0), ('1', 'y', 0)")
    refused = refusal_of(odd)
    assert refused is not None and "something other than version numbers" in refused

    async def open_it() -> None:
        store = SQLiteStore(odd)
        try:
            await store.open()
        finally:
            await store.close()

    with pytest.raises(NewerSchemaError, match="something other than version numbers"):
        asyncio.run(open_it())


def test_the_check_leaves_other_databases_to_the_store(tmp_path: Path) -> None:
    """No file, an empty one, one from before the table of versions, one of this version: no
    refusal here (the store's own opening creates, upgrades, or says what is wrong)."""
    assert refusal_of(tmp_path / "missing.db") is None
    assert not (tmp_path / "missing.db").exists()
    empty = tmp_path / "empty.db"
    empty.touch()
    assert refusal_of(empty) is None
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


@pytest.mark.parametrize(
    ("entry", "kind", "what", "purpose"),
    [
        ("runyard.db", "dir", "a directory", "the database"),
        ("runyard.db-wal", "dir", "a directory", "the database"),
        ("supervisor.sock", "dir", "a directory", "the supervisor's socket"),
        ("supervisor.lock", "dir", "a directory", "the supervisor's lock"),
        ("supervisor.log", "dir", "a directory", "the supervisor's log"),
        ("supervisor.log", "fifo", "a FIFO", "the supervisor's log"),
        ("runs", "file", "a regular file", "the runs' directories"),
        # a probe: every DELETE a 503 for ever, and retention stopped, readiness saying ok
        ("runs/.deleting", "file", "a regular file", "the runs being deleted"),
        ("uploads", "file", "a regular file", "the uploaded files"),
        # a probe: every upload (or every run of a file param) a 503, readiness saying ok
        ("uploads/.incoming", "file", "a regular file", "the uploads being received"),
        ("uploads/.refs", "file", "a regular file", "which runs use which upload"),
    ],
)
def test_serve_refuses_an_entry_of_the_wrong_kind_in_the_data_directory(
    jobs_dir, data, entry: str, kind: str, what: str, purpose: str
) -> None:
    """Each used to stop the start with a traceback (or, the uploads, to start with readiness
    saying ok while every upload failed)."""
    path = data / entry
    path.parent.mkdir(exist_ok=True)
    if kind == "dir":
        path.mkdir()
    elif kind == "fifo":
        os.mkfifo(path)
    else:
        path.write_text("in the way")
    done = _serve(jobs_dir, data)
    said = f"{path} is {what}, where runyard keeps {purpose}: move it aside"
    _refused(done, data, said, socket_left=entry == "supervisor.sock")
    assert {"dir": path.is_dir, "fifo": path.is_fifo, "file": path.is_file}[kind]()  # left


def test_serve_refuses_beside_a_live_supervisor_whose_socket_is_gone(jobs_dir, data) -> None:
    """It holds the lock, so none can start beside it, and no server can reach it: it used to
    end in a traceback after ten seconds, and every later start the same way."""
    lock = data / "supervisor.lock"
    with subprocess.Popen(
        [sys.executable, "-c", "import fcntl, sys; f = open(sys.argv[1], 'a'); "
         "fcntl.flock(f, fcntl.LOCK_EX); print('held', flush=True); sys.stdin.read()",
         str(lock)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    ) as holder:  # fmt: skip
        try:
            assert holder.stdout is not None and holder.stdout.readline() == "held\n"
            (data / "supervisor.sock").write_text("not a socket")
            done = _serve(jobs_dir, data)
            reason = _refused(done, data, f"a supervisor still holds {lock}", socket_left=True)
            assert "stop that supervisor" in reason
        finally:
            holder.kill()

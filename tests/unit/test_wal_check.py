"""The WAL check at start (store/wal_check.py), on logs SQLite itself wrote."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

from runyard.store.wal_check import wal_refusal


def _copies(tmp_path: Path, *after: str) -> Path:
    """A database with a table of 50 rows, each statement of `after` run next, copied with
    its WAL while open (as a server killed outright leaves them)."""
    db = tmp_path / "live.db"
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA wal_autocheckpoint = 0")
    conn.execute("CREATE TABLE t (x)")
    conn.executemany("INSERT INTO t VALUES (?)", [("x" * 500,)] * 50)
    for statement in after:
        conn.execute(statement)
    copy = tmp_path / "copy.db"
    shutil.copy(db, copy)
    shutil.copy(tmp_path / "live.db-wal", tmp_path / "copy.db-wal")
    conn.close()
    return copy


# every frame copied into the database file, the WAL left as it was
CHECKPOINTED = "PRAGMA wal_checkpoint(FULL)"


def _damage_header(db: Path) -> None:
    with db.with_name(db.name + "-wal").open("r+b") as fh:
        fh.seek(24)
        fh.write(bytes(8))


def test_a_sound_log_is_sqlites_to_read(tmp_path: Path) -> None:
    assert wal_refusal(_copies(tmp_path)) is None


def test_a_damaged_header_over_pages_only_the_log_holds_is_refused(tmp_path: Path) -> None:
    db = _copies(tmp_path)
    _damage_header(db)
    refusal = wal_refusal(db)
    assert refusal is not None and "pages the database file does not" in refusal
    with sqlite3.connect(db) as conn:  # what SQLite makes of it: the table is gone
        assert conn.execute("SELECT count(*) FROM sqlite_schema").fetchone() == (0,)


def test_a_damaged_header_over_frames_already_checkpointed_starts(tmp_path: Path) -> None:
    """A header torn while SQLite restarted its log: its frames are in the database."""
    db = _copies(tmp_path, CHECKPOINTED)
    _damage_header(db)
    assert wal_refusal(db) is None


def test_no_log_or_an_empty_one_is_nothing_to_check(tmp_path: Path) -> None:
    db = _copies(tmp_path)
    db.with_name(db.name + "-wal").write_bytes(b"")
    assert wal_refusal(db) is None
    db.with_name(db.name + "-wal").unlink()
    assert wal_refusal(db) is None


def test_pages_past_the_end_a_vacuum_left_are_nothing_lost(tmp_path: Path) -> None:
    """Frames of pages a later commit cut off the database's end (a VACUUM in the same log)
    are no pages only the log holds."""
    copy = _copies(tmp_path, "DELETE FROM t", "VACUUM", "PRAGMA wal_checkpoint(PASSIVE)")
    _damage_header(copy)
    assert wal_refusal(copy) is None


def test_a_sound_header_naming_no_page_size_sqlite_writes_is_not_read_for_frames(
    tmp_path: Path,
) -> None:
    """A header whose checksum holds but whose page size is none SQLite writes (2 GiB here):
    its frames are not read, each whole (a read of 2 GiB a frame)."""
    import struct
    import tracemalloc

    from runyard.store.wal_check import _checksum

    db = tmp_path / "a.db"
    sqlite3.connect(db).close()
    head = struct.pack(">IIIIII", 0x377F0682, 3007000, 2**31, 0, 1, 2)
    cksum = _checksum("<", head, (0, 0))
    (tmp_path / "a.db-wal").write_bytes(head + struct.pack(">II", *cksum) + b"\0" * 4096)
    tracemalloc.start()
    try:
        assert wal_refusal(db) is None
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 2**20, peak  # a read of a frame that size asked for 2 GiB

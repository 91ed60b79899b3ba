"""A database a newer runyard has migrated is not served by this one: its statements would
break what the newer schema keeps (from migration 0008 on, the state events its triggers
write, which a runyard from before would write again).

Checked twice: by `runyard serve` before anything starts (`refusal_of`: one clear line and
exit status 2, as every refusal to start; it also refuses a file that is not a readable
database), and by the store as it opens, for whatever opens it otherwise (`newer_than_known`).
"""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path
from typing import Any

from runyard.store import sqlite_sql as q
from runyard.store.migrations import migration_files
from runyard.store.wal_check import wal_refusal

# what SQLite answers for a file that is not a database, or one whose pages are damaged
UNREADABLE = frozenset({"SQLITE_NOTADB", "SQLITE_CORRUPT"})


class NewerSchemaError(RuntimeError):
    """The database's schema is newer than this runyard knows."""


def known_version() -> int:
    return max(v for v, _, _ in migration_files("sqlite"))


def newer_than_known(path: Path, applied: set[Any], known: int) -> str | None:
    """Why a database with the versions `applied` must not be served by a runyard that knows
    versions up to `known`, or None."""
    if any(type(v) is not int for v in applied):  # a table of versions not made by runyard
        return (
            f"the database {path} has a table of versions that holds something other than "
            "version numbers (not one runyard made). Restore the database from a backup."
        )
    if not applied or max(applied) <= known:
        return None
    return (
        f"the database {path} has schema version {max(applied)}, written by a newer runyard; "
        f"this one knows versions up to {known}. Run the newer runyard, or restore a copy of "
        "the database from before it was upgraded."
    )


def refusal_of(path: Path) -> str | None:
    """Why the SQLite file at `path` must not be served, read without writing: a newer
    runyard's schema, or a file SQLite cannot read as a database (not one, or its pages
    damaged), which the store's opening would stop at too. No file, or no table of versions
    (a new file, a database from before 0008, which the store upgrades): None."""
    if not path.is_file():
        return None
    if (dropped := wal_refusal(path)) is not None:  # before any connection may start anew
        return dropped
    uri = f"{path.absolute().as_uri()}?mode=ro"
    try:
        with contextlib.closing(sqlite3.connect(uri, uri=True)) as conn:
            applied = {v for (v,) in conn.execute(q.APPLIED_MIGRATIONS)}
    except sqlite3.Error as exc:
        if getattr(exc, "sqlite_errorname", None) not in UNREADABLE:
            return None  # no such table, busy, cannot open: the store's opening says
        return (
            f"the database {path} cannot be read ({exc}). Restore it from a backup, or move "
            "it (with its -wal and -shm files) aside to start with an empty one."
        )
    return newer_than_known(path, applied, known_version())

"""A database a newer runyard has migrated is not served by this one: its statements would
break what the newer schema keeps (from migration 0008 on, the state events its triggers
write, which a runyard from before would write again).

Checked twice: by `runyard serve` before anything starts (`refusal_of`: one clear line and
exit status 2, as every refusal to start), and by the store as it opens, for whatever opens
it otherwise (`newer_than_known`).
"""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path

from runyard.store import sqlite_sql as q
from runyard.store.migrations import migration_files


class NewerSchemaError(RuntimeError):
    """The database's schema is newer than this runyard knows."""


def known_version() -> int:
    return max(v for v, _, _ in migration_files("sqlite"))


def newer_than_known(path: Path, applied: set[int]) -> str | None:
    """Why a database with the versions `applied` must not be served, or None."""
    known = known_version()
    if not applied or max(applied) <= known:
        return None
    return (
        f"the database {path} has schema version {max(applied)}, written by a newer runyard; "
        f"this one knows versions up to {known}. Run the newer runyard, or restore a copy of "
        "the database from before it was upgraded."
    )


def refusal_of(path: Path) -> str | None:
    """`newer_than_known` for the SQLite file at `path`, read without writing: no file, no
    table of versions (a database from before 0008, which the store upgrades) or one that
    cannot be read leave the answer to the store's own opening, which reports what is wrong."""
    if not path.is_file():
        return None
    try:
        conn = sqlite3.connect(f"{path.absolute().as_uri()}?mode=ro", uri=True)
    except sqlite3.Error:
        return None
    with contextlib.closing(conn):
        try:
            applied = {v for (v,) in conn.execute(q.APPLIED_MIGRATIONS)}
        except sqlite3.Error:  # no such table, not a database, damaged: the store says
            return None
    return newer_than_known(path, applied)

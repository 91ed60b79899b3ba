"""Numbered schema migrations, one folder per backend."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from importlib import resources


def migration_files(backend: str) -> list[tuple[int, str, str]]:
    """(version, name, sql) sorted by version; names are `NNNN_description.sql`."""
    folder = resources.files(__package__).joinpath(backend)
    found = []
    for entry in folder.iterdir():
        if entry.name.endswith(".sql"):
            version = int(entry.name.split("_", 1)[0])
            found.append((version, entry.name, entry.read_text(encoding="utf-8")))
    return sorted(found)


def sqlite_statements(script: str) -> Iterator[str]:
    """Split a migration into statements (executescript would commit on its own)."""
    buf = ""
    for line in script.splitlines(keepends=True):
        if not buf and (not line.strip() or line.lstrip().startswith("--")):
            continue
        buf += line
        if sqlite3.complete_statement(buf):
            yield buf
            buf = ""
    if buf.strip():
        yield buf

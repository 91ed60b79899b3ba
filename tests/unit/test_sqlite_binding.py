"""None and bool reach SQLite through adapters registered for them (sqlite_reads.py), found at
once, where CPython's own way raises and clears AttributeErrors for each such parameter; each
still binds as it did without them."""

from __future__ import annotations

import sqlite3

from runyard.store import sqlite_reads


def test_none_and_bool_have_adapters_and_bind_as_before() -> None:
    assert sqlite_reads.execute  # the module that registers them is loaded
    for kind in (type(None), bool):
        assert (kind, sqlite3.PrepareProtocol) in sqlite3.adapters
    conn = sqlite3.connect(":memory:")
    row = conn.execute(
        "SELECT ?, typeof(?), ?, ?, typeof(?)", (None, None, True, False, True)
    ).fetchone()
    conn.close()
    assert row == (None, "null", 1, 0, "integer")

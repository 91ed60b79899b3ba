"""Every named query the shared store logic runs exists in each backend's SQL module."""

from __future__ import annotations

import inspect
import re

import pytest

from runyard.store import leases, logic, postgres_sql, sqlite_sql

# one("NAME", ...), rows(...), count(...), execute(...), Query("NAME", ...)
NAMED = re.compile(r'\b(?:one|rows|count|execute|Query)\(\s*"([A-Z_]+)"')
SOURCE = inspect.getsource(logic) + inspect.getsource(leases)  # the units of both modules


def test_the_pattern_finds_the_logics_queries() -> None:
    names = set(NAMED.findall(SOURCE))
    assert {"INSERT_RUN", "CLAIM_CANDIDATES", "END_ATTEMPT", "LIST_RUNS", "LIST_BATCHES"} <= names
    assert {"GET_SERVER_FOR_UPDATE", "RENEW_SERVER", "ORPHANED_ATTEMPTS"} <= names


@pytest.mark.parametrize("dialect", [sqlite_sql, postgres_sql], ids=["sqlite", "postgres"])
@pytest.mark.parametrize("name", sorted(set(NAMED.findall(SOURCE))))
def test_each_backend_defines_every_query(dialect: object, name: str) -> None:
    query = getattr(dialect, name)
    assert query is None or isinstance(query, str) or callable(query)

"""Every named query the shared store logic runs exists in each backend's SQL module."""

from __future__ import annotations

import inspect
import re

import pytest

from runyard.store import logic, postgres_sql, sqlite_sql

# one("NAME", ...), rows(...), count(...), execute(...), Query("NAME", ...)
NAMED = re.compile(r'\b(?:one|rows|count|execute|Query)\(\s*"([A-Z_]+)"')


def test_the_logic_names_its_queries() -> None:
    assert len(set(NAMED.findall(inspect.getsource(logic)))) > 40


@pytest.mark.parametrize("dialect", [sqlite_sql, postgres_sql], ids=["sqlite", "postgres"])
@pytest.mark.parametrize("name", sorted(set(NAMED.findall(inspect.getsource(logic)))))
def test_each_backend_defines_every_query(dialect: object, name: str) -> None:
    query = getattr(dialect, name)
    assert query is None or isinstance(query, str) or callable(query)

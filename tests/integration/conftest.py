from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import psycopg
import pytest

from runyard.store import Store
from runyard.store.postgres import PostgresStore
from runyard.store.sqlite import SQLiteStore

# Every store implementation the contract suite runs against. PostgreSQL is the machine's own
# (RUNYARD_TEST_POSTGRES, default 127.0.0.1:5432, database test); each test gets a schema.
STORES = ["sqlite", "postgres"]
POSTGRES = os.environ.get(
    "RUNYARD_TEST_POSTGRES", "host=127.0.0.1 port=5432 dbname=test user=postgres"
)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(params=STORES)
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    schema = None
    if request.param == "sqlite":
        impl: Store = SQLiteStore(tmp_path / "store.db")  # a fresh database file per test
    else:
        schema = f"t_{uuid.uuid4().hex[:16]}"  # a fresh schema per test
        with psycopg.connect(POSTGRES, autocommit=True) as conn:
            conn.execute(f"CREATE SCHEMA {schema}")
        impl = PostgresStore(POSTGRES, schema=schema)
    await impl.open()
    yield impl
    await impl.close()
    if schema is not None:
        with psycopg.connect(POSTGRES, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")

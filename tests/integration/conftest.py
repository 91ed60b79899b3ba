from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
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


@pytest.fixture
async def sqlite_store(tmp_path: Path) -> AsyncIterator[SQLiteStore]:
    """One SQLite store over a fresh file, patient with a write lock held elsewhere."""
    store = SQLiteStore(tmp_path / "store.db", busy_timeout_ms=30_000)
    await store.open()
    yield store
    await store.close()


@pytest.fixture(params=STORES)
def store_factory(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[[], Store]]:
    """A fresh database per test (a new file, a new schema), as a factory of stores over it:
    each store is one server's view of the shared database."""
    if request.param == "sqlite":
        yield lambda: SQLiteStore(tmp_path / "store.db")
        return
    schema = f"t_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(POSTGRES, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    yield lambda: PostgresStore(POSTGRES, schema=schema)
    with psycopg.connect(POSTGRES, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA {schema} CASCADE")


@pytest.fixture
async def store(store_factory: Callable[[], Store]) -> AsyncIterator[Store]:
    impl = store_factory()
    await impl.open()
    yield impl
    await impl.close()


@pytest.fixture
async def peer(store_factory: Callable[[], Store], store: Store) -> AsyncIterator[Store]:
    """Another server's store over the same database as `store`."""
    impl = store_factory()
    await impl.open()
    yield impl
    await impl.close()

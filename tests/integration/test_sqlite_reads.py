"""SQLite's reads run on a connection and thread of their own: a read is answered while the
writer waits, and sees every write acknowledged before it was asked."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from runyard.models import RunState
from runyard.store.sqlite import SQLiteStore
from tests.integration.test_group_commit import write_lock_held
from tests.integration.test_store_contract import make_run

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SQLiteStore]:
    store = SQLiteStore(tmp_path / "store.db", busy_timeout_ms=5_000)
    await store.open()
    yield store
    await store.close()


async def test_a_read_is_answered_while_a_write_waits_for_the_database(
    store: SQLiteStore, tmp_path: Path
) -> None:
    stored = (await store.insert_run(make_run()))[0]
    with write_lock_held(tmp_path / "store.db"):
        write = asyncio.ensure_future(store.insert_run(make_run()))
        await asyncio.sleep(0)  # the write is on the writer's thread, waiting in BEGIN
        read = asyncio.ensure_future(store.get_run(stored.id))
        count = asyncio.ensure_future(store.count_runs(RunState.QUEUED))
        done, _ = await asyncio.wait({write, read}, return_when=asyncio.FIRST_COMPLETED)
        assert read in done and not write.done()  # on one thread it would wait behind it
        assert read.result() == stored
        assert await count == 1
    assert (await write)[1] is True


async def test_a_read_sees_every_write_acknowledged_before_it(store: SQLiteStore) -> None:
    for n in range(1, 21):
        await store.insert_run(make_run())
        assert await store.count_runs(RunState.QUEUED) == n


async def test_the_reads_connection_cannot_write(store: SQLiteStore, tmp_path: Path) -> None:
    conn = store._reads._conn
    assert conn is not None
    with pytest.raises(sqlite3.OperationalError, match="readonly"):
        conn.execute("DELETE FROM runs")

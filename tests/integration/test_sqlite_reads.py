"""SQLite's reads run on a connection and thread of their own: a read is answered while the
writer waits, and sees every write acknowledged before it was asked."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from runyard.errors import StoreBusyError
from runyard.models import Batch, RunState
from runyard.store.sqlite import SQLiteStore
from tests.integration.test_group_commit import write_lock_held
from tests.integration.test_store_contract import make_run

pytestmark = pytest.mark.anyio


async def test_a_read_is_answered_while_a_write_waits_for_the_database(
    sqlite_store: SQLiteStore, tmp_path: Path
) -> None:
    stored = (await sqlite_store.insert_run(make_run()))[0]
    with write_lock_held(tmp_path / "store.db"):
        write = asyncio.ensure_future(sqlite_store.insert_run(make_run()))
        await asyncio.sleep(0)  # the write is on the writer's thread, waiting in BEGIN
        read = asyncio.ensure_future(sqlite_store.get_run(stored.id))
        count = asyncio.ensure_future(sqlite_store.count_runs(RunState.QUEUED))
        done, _ = await asyncio.wait({write, read}, return_when=asyncio.FIRST_COMPLETED)
        assert read in done and not write.done()  # on one thread it would wait behind it
        assert read.result() == stored
        assert await count == 1
    assert (await write)[1] is True


async def test_a_read_sees_every_write_acknowledged_before_it(sqlite_store: SQLiteStore) -> None:
    for n in range(1, 21):
        await sqlite_store.insert_run(make_run())
        assert await sqlite_store.count_runs(RunState.QUEUED) == n


async def test_the_reads_connection_cannot_write(sqlite_store: SQLiteStore, tmp_path: Path) -> None:
    conn = sqlite_store._reads._conn
    assert conn is not None
    with pytest.raises(sqlite3.OperationalError, match="readonly"):
        conn.execute("DELETE FROM runs")


async def test_what_is_asked_while_the_store_closes_is_answered(tmp_path: Path) -> None:
    """Reads and writes asked while close() runs each get an answer (a result, or "closed"):
    none lands behind the end of a thread that will never read it."""
    store = SQLiteStore(tmp_path / "closing.db")
    await store.open()
    stored = (await store.insert_run(make_run()))[0]
    closing = asyncio.ensure_future(store.close())
    asked: list[asyncio.Future[object]] = []
    while not closing.done():
        asked.append(asyncio.ensure_future(store.get_run(stored.id)))
        asked.append(asyncio.ensure_future(store.insert_run(make_run())))
        await asyncio.sleep(0)
    _, unanswered = await asyncio.wait(asked, timeout=30)  # a guard: answers come at once
    assert not unanswered
    for f in asked:
        assert f.exception() is None or isinstance(f.exception(), StoreBusyError)
    with pytest.raises(StoreBusyError):
        await store.get_run(stored.id)


async def test_the_wal_is_rewound_while_reads_follow_each_other(tmp_path: Path) -> None:
    """Reads back to back on their own connection keep SQLite's automatic checkpoint from
    rewinding the WAL; the writer rewinds it once it passes its limit."""
    limit = 256 * 1024
    store = SQLiteStore(tmp_path / "wal.db", wal_limit_bytes=limit)
    await store.open()
    wal = tmp_path / "wal.db-wal"
    try:
        await store.insert_batch(
            Batch("b", "j", 20_000, 1.0, {}), [make_run() for _ in range(20_000)]
        )
        stop = asyncio.Event()

        async def reads() -> None:
            while not stop.is_set():
                await store.count_runs(RunState.QUEUED)

        async def writes(n: int) -> None:
            for _ in range(n):
                await store.insert_run(make_run())

        reader = asyncio.ensure_future(reads())
        largest = 0
        for _ in range(10):
            await asyncio.gather(*(writes(100) for _ in range(4)))
            largest = max(largest, wal.stat().st_size)
        stop.set()
        await reader
        assert largest < 16 * limit, largest  # about a page and more per write without it
    finally:
        await store.close()

"""Group commit on SQLite: writes that queue while the database is held commit together, and
each still succeeds or fails on its own — a failing neighbour, a failpoint armed for another
kind of write, or a commit that cannot happen decide exactly the callers they concern."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Awaitable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from runyard import failpoints
from runyard.errors import StorageFullError, StorageIOError
from runyard.models import Batch, RunFilter, RunState
from runyard.store.sqlite import SQLiteStore
from tests.integration.test_store_contract import make_run

pytestmark = pytest.mark.anyio


@contextmanager
def write_lock_held(path: Path) -> Iterator[sqlite3.Connection]:
    """Another connection holds the database's write lock until the block ends: the store's
    first transaction waits in BEGIN, and every write submitted meanwhile queues behind it."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    finally:
        conn.execute("COMMIT")
        conn.close()


async def queued(*calls: Awaitable[Any]) -> list[Any]:
    """Start every call, let each reach the store's queue, and gather the outcomes."""
    tasks = [asyncio.ensure_future(c) for c in calls]
    for _ in range(3):
        await asyncio.sleep(0)  # each task runs up to its await on the store
    return tasks  # type: ignore[return-value]


async def outcomes(tasks: list[asyncio.Future[Any]]) -> list[Any]:
    return await asyncio.gather(*tasks, return_exceptions=True)


async def test_a_failing_unit_is_undone_alone(sqlite_store: SQLiteStore, tmp_path: Path) -> None:
    first = make_run()
    await sqlite_store.insert_batch(Batch("b1", "j", 0, 1.0, {}), [])
    runs = [make_run() for _ in range(6)]
    with write_lock_held(tmp_path / "store.db"):
        tasks = await queued(
            sqlite_store.insert_run(first),
            *(sqlite_store.insert_run(r) for r in runs[:3]),
            sqlite_store.insert_batch(Batch("b1", "j", 1, 2.0, {}), [make_run()]),  # taken id
            *(sqlite_store.insert_run(r) for r in runs[3:]),
        )
    results = await outcomes(tasks)
    assert isinstance(results[4], sqlite3.IntegrityError)
    assert all(isinstance(r, tuple) and r[1] for r in results[:4] + results[5:])
    stored = {r.id for r in (await sqlite_store.list_runs(RunFilter(limit=100))).runs}
    assert stored == {first.id, *(r.id for r in runs)}  # the batch's run was undone with it
    assert (await sqlite_store.get_batch("b1")) == Batch("b1", "j", 0, 1.0, {})


async def test_what_ran_before_a_failing_unit_is_run_again_not_kept_from_before(
    sqlite_store: SQLiteStore, tmp_path: Path
) -> None:
    """The group runs as one transaction; a unit failing late undoes all of it, so the units
    before it must be run again (a claim then takes what it takes in the redone transaction),
    never answered with what the undone one did."""
    await sqlite_store.insert_batch(Batch("b1", "j", 0, 1.0, {}), [])
    run = make_run()
    with write_lock_held(tmp_path / "store.db"):
        tasks = await queued(
            sqlite_store.insert_run(run),
            sqlite_store.claim(10, {}, 1500.0, "h"),
            sqlite_store.insert_batch(Batch("b1", "j", 1, 2.0, {}), [make_run()]),  # taken id
            sqlite_store.claim(10, {}, 1500.0, "h"),  # after the failure: nothing left
        )
    inserted, claimed, failed, nothing = await outcomes(tasks)
    assert isinstance(failed, sqlite3.IntegrityError)
    assert inserted == (run, True)
    assert [c.run.id for c in claimed] == [run.id] and nothing == []
    stored = await sqlite_store.get_run(run.id)
    assert stored is not None and stored.state is RunState.RUNNING and stored.attempt == 1
    assert [a.number for a in await sqlite_store.get_attempts(run.id)] == [1]
    assert [e.seq for e in await sqlite_store.list_events(run.id, 0, 10)] == [1, 2]


async def test_a_failpoint_fails_only_its_own_kind_of_write(
    sqlite_store: SQLiteStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = (await sqlite_store.insert_run(make_run()))[0]
    monkeypatch.setattr(failpoints, "_STATE", failpoints._Failpoints("progress=enospc"))
    runs = [make_run() for _ in range(4)]
    with write_lock_held(tmp_path / "store.db"):
        tasks = await queued(
            sqlite_store.insert_run(runs[0]),
            sqlite_store.insert_run(runs[1]),
            sqlite_store.add_progress(
                target.id, 1, [(1.0, {"fraction": 0.5})], offset=9, skipped=0
            ),
            sqlite_store.insert_run(runs[2]),
            sqlite_store.insert_run(runs[3]),
        )
    results = await outcomes(tasks)
    assert isinstance(results[2], StorageFullError)
    assert all(isinstance(r, tuple) for r in results[:2] + results[3:])
    assert await sqlite_store.progress_offset(target.id, 1) == 0  # nothing of it was kept
    for run in runs:
        assert await sqlite_store.get_run(run.id) == run


async def test_a_commit_that_cannot_happen_fails_every_write_of_the_group(
    sqlite_store: SQLiteStore, tmp_path: Path
) -> None:
    db = tmp_path / "store.db"
    runs = [make_run() for _ in range(5)]
    with write_lock_held(db):
        tasks = await queued(*(sqlite_store.insert_run(r) for r in runs))
        db.rename(tmp_path / "elsewhere.db")  # the file the store opened is gone from its path
    results = await outcomes(tasks)
    assert all(isinstance(r, StorageIOError) for r in results), results
    (tmp_path / "elsewhere.db").rename(db)  # back: the store reads its own file again
    assert (await sqlite_store.list_runs(RunFilter())).runs == []  # none of them was kept

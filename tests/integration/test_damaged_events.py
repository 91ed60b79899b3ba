"""A run's events with damaged ones among them (their data rewritten behind the server's
back): each is left out, and a page is short only at the end — the stream's replay and the
hub's publishing take a short page for the last (a review: one damaged event in a page
held back the rest of the run's events, its end included, and a page of them ended a
replay)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from runyard.store.sqlite import SQLiteStore
from tests.integration.test_store_contract import make_run

pytestmark = pytest.mark.anyio


async def test_damaged_events_are_left_out_and_pages_stay_whole(
    sqlite_store: SQLiteStore, tmp_path: Path
) -> None:
    run = make_run()
    await sqlite_store.insert_run(run)
    lines = [(1000.0 + i, {"i": i}) for i in range(10)]
    await sqlite_store.add_progress(run.id, 1, lines, offset=100, skipped=0)
    seqs = [e.seq for e in await sqlite_store.list_events(run.id, 0, 100)]
    assert len(seqs) == 11  # the state event of its insert, then the ten
    damaged = set(seqs[2:6])
    with sqlite3.connect(tmp_path / "store.db") as conn:
        for seq in damaged:
            conn.execute("UPDATE run_events SET data = '{bad' WHERE seq = ?", (seq,))
    page = await sqlite_store.list_events(run.id, 0, 3)
    assert [e.seq for e in page] == [s for s in seqs if s not in damaged][:3]
    rest = await sqlite_store.list_events(run.id, page[-1].seq, 100)
    assert [e.seq for e in page + rest] == [s for s in seqs if s not in damaged]

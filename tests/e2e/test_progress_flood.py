"""A program that writes progress as fast as it can: its lines are coalesced to the latest, the
store keeps a bounded number of its events, and its run ends with its last progress."""

from __future__ import annotations

import asyncio
import sqlite3
import sys
from pathlib import Path

import pytest

from runyard.models import RunState
from runyard.store.progress import MAX_RUN_EVENTS
from tests import web
from tests.sse import watch_events
from tests.support import wait_for

pytestmark = pytest.mark.e2e

FLOOD = Path(__file__).parent / "programs" / "flood.py"
LINES = 200_000  # 2.6 MB of progress in well under a second, one line per loop turn


def test_a_progress_flood_is_coalesced_and_bounded(start_server, write_job, jobs_dir: Path) -> None:
    write_job("flood", f'command = ["{sys.executable}", "{FLOOD}", "{LINES}"]\n')
    write_job("quick", 'command = ["true"]\n')
    server = start_server(jobs_dir)
    with server.client() as c:
        run = c.submit("flood")
        wait_for(lambda: c.run(run.id).state is not RunState.QUEUED, what="started")
        url = f"{server.url}/v1/runs/{run.id}/events"

        async def watch():
            async with web.AsyncClient(timeout=120) as client:
                return await watch_events(client, url)

        watched = asyncio.run(watch())  # a live watcher from the flood's start to its end
        done = server.wait_run(c, run.id)
        assert done.state is RunState.SUCCEEDED
        assert done.progress == {"done": True}  # the latest line, whatever was coalesced
        assert done.progress_skipped == 1  # the one bad line among the last ones, read
        other = server.wait_run(c, c.submit("quick").id)  # the queue moves on as ever
        assert other.state is RunState.SUCCEEDED
    progress = [e for e in watched.events if e["kind"] == "progress"]
    assert 0 < len(progress) < MAX_RUN_EVENTS  # not one event (and row) a line
    assert progress[-1]["data"] == {"done": True, "attempt": 1}
    seqs = [e["seq"] for e in watched.events]
    assert seqs == list(range(1, len(seqs) + 1))
    ids = [e["data"]["i"] for e in progress[:-1]]
    assert ids == sorted(ids)  # coalesced, never reordered
    with sqlite3.connect(server.data_dir / "runyard.db") as db:
        (rows,) = db.execute("SELECT count(*) FROM run_events WHERE run_id = ?", (run.id,))
    assert rows[0] == len(watched.events)

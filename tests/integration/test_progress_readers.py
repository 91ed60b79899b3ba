"""Progress is read once, however many readers ask at the same moment (a run's read, the
attempt's end and a new watcher can all arrive together)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from runyard.execution.layout import RunPaths
from runyard.store.sqlite import SQLiteStore
from runyard.streams.hub import StreamHub
from tests.support import queued_run

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def test_concurrent_progress_reads_record_each_line_once(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "store.db")
    await store.open()
    try:
        run = queued_run()
        await store.insert_run(run)
        await store.claim(1, {}, now=2000.0, host="h")
        paths = RunPaths.of(tmp_path, run.id)
        paths.root.mkdir(parents=True)
        good = [json.dumps({"fraction": i / 10}).encode() for i in range(10)]
        bad = [b"not json", b"[1, 2]", b"\xff\xfe"]
        paths.progress_file(1).write_bytes(b"\n".join(good + bad) + b"\n")

        hub = StreamHub(store, lambda rid: RunPaths.of(tmp_path, rid))
        hub.start()
        await hub.track(run.id, 1, fresh=True)
        await asyncio.gather(
            *(hub.refresh_progress(run.id, 1) for _ in range(5)),
            hub.tailer_for(run.id, 1),
            hub.attempt_ending(run.id, 1, progress_bytes=None),
        )
        await hub.close()

        got = await store.get_run(run.id)
        assert got is not None
        assert got.progress_skipped == 3
        assert got.progress == {"fraction": 0.9}
        events = [e for e in await store.list_events(run.id, 0) if e.kind == "progress"]
        assert [e.data["fraction"] for e in events] == [i / 10 for i in range(10)]
        assert len(hub._progress_locks) == 0  # no lock outlives its readers
    finally:
        await store.close()

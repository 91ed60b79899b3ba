"""A watcher of the feed that goes away while it is being subscribed holds nothing: no
subscription is left behind to make every run that starts be tailed for nobody."""

from __future__ import annotations

import asyncio
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


async def test_a_feed_watcher_cancelled_while_subscribing_leaves_nothing(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "store.db")
    await store.open()
    hub = StreamHub(store, lambda rid: RunPaths.of(tmp_path, rid))
    hub.start()
    try:
        run = queued_run()
        await store.insert_run(run)
        await store.claim(1, {}, now=2000.0, host="h")
        RunPaths.of(tmp_path, run.id).root.mkdir(parents=True)
        await hub.track(run.id, 1, fresh=True)
        # the running attempt's tailer cannot be made yet: the subscription waits for it
        async with hub._progress_locks.hold(run.id):
            watcher = asyncio.create_task(hub.subscribe_feed())
            for _ in range(3):  # its first steps: subscribed, then waiting for the tailer
                await asyncio.sleep(0)
            assert hub.feed and not watcher.done()
            watcher.cancel()  # the client went away
            with pytest.raises(asyncio.CancelledError):
                await watcher
        assert not hub.feed.subscribers
        # and a subscription that completes is still made, with the running attempt tailed
        sub = await hub.subscribe_feed()
        assert hub.feed.subscribers == {sub} and run.id in hub.tailers
        hub.feed.unsubscribe(sub)
    finally:
        await hub.close()
        await store.close()

"""A running attempt is followed as it writes exactly while somebody watches it: its log's
watchers, its events' (progress is an event) or the feed's. The first one makes its tailer;
when the last one leaves, the tailer goes, with its task and its watch, and the progress it
had read and held back is stored first, so nothing it read is lost or read twice.

The real SQLite store, the real hub and real files."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from runyard.execution.layout import RunPaths
from runyard.models import Run, RunEvent, RunState
from runyard.store.sqlite import SQLiteStore
from runyard.streams import tailer as tailer_module
from runyard.streams.follow import follow_events, follow_log
from runyard.streams.hub import StreamHub
from runyard.streams.subscriber import Chunk, Following
from tests.support import queued_run

pytestmark = pytest.mark.anyio
DEADLINE = 30.0


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[tuple[SQLiteStore, StreamHub, Run]]:
    store = SQLiteStore(tmp_path / "store.db")
    await store.open()
    run = queued_run()
    await store.insert_run(run)
    hub = StreamHub(store, lambda rid: RunPaths.of(tmp_path, rid))
    hub.start()
    RunPaths.of(tmp_path, run.id).root.mkdir(parents=True)
    (got,) = await store.claim(1, {}, now=2000.0, host="h")
    hub.on_transition(got.run, RunState.QUEUED)
    try:
        yield store, hub, got.run
    finally:
        await hub.close()
        await store.close()


def progress(hub: StreamHub, run: Run, fraction: float) -> None:
    with hub.paths(run.id).progress_file(1).open("a") as fh:
        fh.write(json.dumps({"fraction": fraction}) + "\n")


def tailer_tasks() -> set[asyncio.Task[object]]:
    return {t for t in asyncio.all_tasks() if t.get_name().startswith("tailer-")}


async def hubs_tasks_done() -> None:
    """The hub's short tasks (publications, retirements) started so far have run."""
    tasks = {t for t in asyncio.all_tasks() if t.get_name() == "event-publish"}
    if tasks:
        await asyncio.wait(tasks)


async def test_an_events_watcher_gets_progress_while_the_run_runs(world) -> None:
    """Progress reached an events stream only at the run's end (all its lines at once) when
    nobody watched the log or the feed: nothing read the progress file meanwhile."""
    store, hub, run = world
    await hub.track(run.id, 1, fresh=True)
    assert hub.tailers == {}  # nobody watches: the run costs nothing here
    follower = follow_events(hub, store, run.id, 0)
    async with asyncio.timeout(DEADLINE):
        states = [await anext(follower), await anext(follower)]  # queued, running
        assert [e.kind for e in states if isinstance(e, RunEvent)] == ["state", "state"]
        progress(hub, run, 0.25)
        item = await anext(follower)
    assert isinstance(item, RunEvent) and item.kind == "progress"
    assert item.data["fraction"] == 0.25
    assert (await store.get_run(run.id)).state is RunState.RUNNING  # type: ignore[union-attr]
    await follower.aclose()
    await hubs_tasks_done()
    assert hub.tailers == {} and hub.notifier.watches == 0 and not tailer_tasks()


async def test_an_events_watcher_there_before_the_start_has_the_attempt_tailed(world) -> None:
    _, hub, run = world
    sub, _ = await hub.subscribe_events(run.id)  # watching since it was queued
    await hub.track(run.id, 1, fresh=True)
    assert run.id in hub.tailers
    hub.unsubscribe_events(run.id, sub)
    await hubs_tasks_done()
    assert hub.tailers == {}


async def test_the_last_log_watcher_leaving_ends_the_tailer_and_keeps_its_progress(
    world, monkeypatch
) -> None:
    """A tailer stayed, reading the log of a running program for nobody, until the program
    ended. It goes now; what progress it had read and held back (written at most every
    PROGRESS_EVERY_S) is stored before, not dropped with it and not read again."""
    monkeypatch.setattr(tailer_module, "PROGRESS_EVERY_S", 3600.0)  # after the first, held
    store, hub, run = world
    await hub.track(run.id, 1, fresh=True)
    hub.paths(run.id).log(1).write_bytes(b"hello\n")
    follower = follow_log(hub, store, run.id, None, 0)
    async with asyncio.timeout(DEADLINE):
        assert await anext(follower) == Following(1)
        assert await anext(follower) == Chunk(0, b"hello\n")
        tailer = hub.tailers[run.id]
        progress(hub, run, 0.5)
        await tailer.pump()  # read, and stored: the first write is never held
        progress(hub, run, 0.75)
        await tailer.pump()  # read, and held: the next write is not due for an hour
    await follower.aclose()
    await hubs_tasks_done()
    assert hub.tailers == {} and hub.notifier.watches == 0 and not tailer_tasks()
    got = await store.get_run(run.id)
    assert got is not None and got.progress == {"fraction": 0.75}
    await hub.attempt_ending(run.id, 1, None)  # its end reads on from where it was left
    events = await store.list_events(run.id, 0, 100)
    assert [e.data["fraction"] for e in events if e.kind == "progress"] == [0.5, 0.75]


async def test_a_tailer_still_watched_by_the_feed_or_another_stays(world) -> None:
    _, hub, run = world
    await hub.track(run.id, 1, fresh=True)
    feed = await hub.subscribe_feed()
    tailer = hub.tailers[run.id]
    first, _ = await hub.subscribe_events(run.id)
    second, _ = await hub.subscribe_events(run.id)
    hub.unsubscribe_events(run.id, first)
    hub.unsubscribe_feed(feed)  # the second events watcher still wants it
    await hubs_tasks_done()
    assert hub.tailers.get(run.id) is tailer
    hub.unsubscribe_events(run.id, second)
    await hubs_tasks_done()
    assert hub.tailers == {}

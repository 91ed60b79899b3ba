"""Following a run through the hub, with each race injected at the exact point it can strike:
a change that lands between reading the run and waiting is never missed, and an attempt that
ends while (or before) its start is being heard leaves no tailer, task or watch behind.

The real SQLite store and the real hub; the store is wrapped only to run the racing change
while one of its reads is in flight, which is where the race lives."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator, Awaitable, Callable
from functools import partial
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from runyard.execution.layout import RunPaths
from runyard.models import AttemptEnd, AttemptState, Run, RunEvent, RunState
from runyard.services.lifecycle import Lifecycle
from runyard.store.sqlite import SQLiteStore
from runyard.streams.follow import EVENT_PAGE, follow_events, follow_log
from runyard.streams.hub import StreamHub
from runyard.streams.subscriber import Chunk, End, Following, Lagged
from tests.support import queued_run

pytestmark = pytest.mark.anyio
FOREVER = 3600.0  # the follower's re-check period: a missed change would hang, never be
DEADLINE = 30.0  # papered over by a periodic re-read (the deadline only fails the test)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class RacingStore:
    """The store, except that the n-th `get_run` runs `race` after its read and before it
    answers: the caller gets the state as it was, the change has happened."""

    def __init__(self, store: SQLiteStore) -> None:
        self._store = store
        self.races: dict[int, Callable[[], Awaitable[None]]] = {}
        self.reads = 0
        self.offset_race: Callable[[], Awaitable[None]] | None = None
        self.events_race: Callable[[], Awaitable[None]] | None = None
        self.seq_race: Callable[[], Awaitable[None]] | None = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    async def get_run(self, run_id: str) -> Run | None:
        run = await self._store.get_run(run_id)
        self.reads += 1
        race = self.races.pop(self.reads, None)
        if race is not None:
            await race()
        return run

    async def list_events(
        self, run_id: str, after: int, limit: int = 1000, max_bytes: int | None = None
    ) -> list[RunEvent]:
        events = await self._store.list_events(run_id, after, limit, max_bytes)
        race, self.events_race = self.events_race, None
        if race is not None:
            await race()
        return events

    async def last_event_seq(self, run_id: str) -> int:
        seq = await self._store.last_event_seq(run_id)
        race, self.seq_race = self.seq_race, None
        if race is not None:
            await race()
        return seq

    async def progress_offset(self, run_id: str, attempt: int) -> int:
        offset = await self._store.progress_offset(run_id, attempt)
        race, self.offset_race = self.offset_race, None
        if race is not None:
            await race()
        return offset


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[tuple[RacingStore, StreamHub, Run]]:
    real = SQLiteStore(tmp_path / "store.db")
    await real.open()
    run = queued_run()
    await real.insert_run(run)
    store = RacingStore(real)
    hub = StreamHub(store, lambda rid: RunPaths.of(tmp_path, rid))  # type: ignore[arg-type]
    hub.start()
    RunPaths.of(tmp_path, run.id).root.mkdir(parents=True)
    try:
        yield store, hub, run
    finally:
        await hub.close()
        await real.close()


SUCCEEDED = AttemptEnd(
    attempt_state=AttemptState.EXITED, ended_at=3000.0, run_state=RunState.SUCCEEDED,
    reason="exit code 0", outcome="exit", exit_code=0,
)  # fmt: skip


async def claim(store: RacingStore, hub: StreamHub) -> Run:
    (got,) = await store.claim(1, {}, now=2000.0, host="h")
    hub.on_transition(got.run, RunState.QUEUED)
    return got.run


async def finish(
    store: RacingStore, hub: StreamHub, run: Run, progress_bytes: int | None = None
) -> None:
    await hub.attempt_ending(run.id, 1, progress_bytes)
    updated = await store.end_attempt(run.id, 1, SUCCEEDED)
    assert updated is not None
    hub.on_transition(updated, RunState.RUNNING)


async def collect(items: AsyncIterator[object]) -> list[object]:
    async with asyncio.timeout(DEADLINE):
        return [item async for item in items]


def log_of(hub: StreamHub, run: Run) -> Path:
    return hub.paths(run.id).log(1)


async def test_a_start_while_the_queued_run_is_read_is_not_missed(world) -> None:
    store, hub, run = world

    async def started_meanwhile() -> None:
        claimed = await claim(store, hub)
        log_of(hub, run).write_bytes(b"one\n")
        await hub.track(run.id, 1, fresh=True)
        await finish(store, hub, claimed)

    store.races[1] = started_meanwhile  # the follower's first read still sees it queued
    items = await collect(follow_log(hub, store, run.id, None, 0, wait_s=FOREVER))  # type: ignore[arg-type]
    assert items[0] == Following(1)
    assert b"".join(i.data for i in items if isinstance(i, Chunk)) == b"one\n"
    assert isinstance(items[-1], End) and items[-1].state == "succeeded"


async def test_a_tailer_appearing_while_the_running_run_is_read_is_not_missed(world) -> None:
    """Claimed but not yet heard as started (no tailer): the follower reads the run, sees it
    running, and waits for its tailer; the start lands during that read."""
    store, hub, run = world
    claimed = await claim(store, hub)
    got: list[object] = []

    async def started_meanwhile() -> None:
        await hub.track(run.id, 1, fresh=True)
        log_of(hub, run).write_bytes(b"first line\n")

    store.races[2] = started_meanwhile  # 1: which attempt; 2: is it still running?
    follower = follow_log(hub, store, run.id, None, 0, wait_s=FOREVER)  # type: ignore[arg-type]
    async with asyncio.timeout(DEADLINE):
        got.append(await anext(follower))
        got.append(await anext(follower))  # live, from the tailer, before the run ends
        assert hub.tailers[run.id].attempt == 1
        with log_of(hub, run).open("ab") as fh:
            fh.write(b"second line\n")
        got.append(await anext(follower))
        await finish(store, hub, claimed)
        got += [item async for item in follower]
    assert got[0] == Following(1)
    assert got[1] == Chunk(0, b"first line\n")
    assert got[2] == Chunk(11, b"second line\n")
    assert isinstance(got[-1], End)


async def test_an_attempt_that_ends_before_its_start_is_heard_leaves_nothing(world) -> None:
    store, hub, run = world
    hub.feed.subscribe()  # a feed watcher: every running attempt gets a tailer
    claimed = await claim(store, hub)
    await finish(store, hub, claimed)  # a short program: its exit is recorded first
    await hub.track(run.id, 1, fresh=True)  # then its start is heard
    assert hub.tailers == {}
    assert hub.running == {}
    assert hub.notifier.watches == 0


async def test_an_attempt_that_ends_while_its_tailer_is_made_leaves_nothing(world) -> None:
    store, hub, run = world
    hub.feed.subscribe()
    claimed = await claim(store, hub)

    async def ended_meanwhile() -> None:
        await finish(store, hub, claimed, progress_bytes=0)  # a short run: no progress

    store.offset_race = ended_meanwhile  # the tailer reads where progress was left
    await hub.track(run.id, 1, fresh=True)
    tasks = {t.get_name() for t in asyncio.all_tasks()}
    assert hub.tailers == {}
    assert hub.running == {}
    assert hub.notifier.watches == 0
    assert f"tailer-{run.id}" not in tasks


async def test_two_handles_on_one_directory_keep_their_watch_until_the_last_goes(
    tmp_path: Path,
) -> None:
    """The kernel has one watch per directory: removing it for the first handle would leave
    the second (a retry's tailer on the same run directory) deaf."""
    from runyard.streams.notify import FileNotifier

    notifier = FileNotifier()
    notifier.start()
    if notifier.mode != "inotify":
        await notifier.stop()
        pytest.skip("no inotify here")
    woken: list[str] = []
    first = notifier.watch(tmp_path, lambda: woken.append("first"))
    second = notifier.watch(tmp_path, lambda: woken.append("second"))
    ready = asyncio.Event()
    notifier.unwatch(first)
    assert notifier.watches == 1
    third = notifier.watch(tmp_path, ready.set)
    (tmp_path / "f").write_bytes(b"x")
    async with asyncio.timeout(DEADLINE):
        await ready.wait()
    assert "second" in woken and "first" not in woken
    notifier.unwatch(second)
    notifier.unwatch(third)
    assert notifier.watches == 0
    await notifier.stop()


async def test_an_end_heard_before_a_new_tailers_first_read_still_gives_the_last_bytes(
    world, monkeypatch
) -> None:
    """A watcher made the attempt's tailer after the attempt's last output had been read for
    its end (there was no tailer then), and the end was heard before that tailer's first read:
    the follower got `end` without the bytes after its offset (seen after a server restart)."""
    import threading

    from runyard.streams.tailer import AttemptTailer

    store, hub, run = world
    claimed = await claim(store, hub)
    await hub.track(run.id, 1, fresh=True)
    log_of(hub, run).write_bytes(b"seen\nlast\n")
    await hub.attempt_ending(run.id, 1, 0)  # nobody watches yet: nothing to read
    release, reading = threading.Event(), asyncio.Event()
    original = AttemptTailer._read
    loop = asyncio.get_running_loop()

    def held_read(self: AttemptTailer, with_log: bool) -> object:
        loop.call_soon_threadsafe(reading.set)  # its watcher subscribed: its first read
        release.wait(DEADLINE)
        return original(self, with_log)

    monkeypatch.setattr(AttemptTailer, "_read", held_read)
    try:
        follower = asyncio.ensure_future(
            collect(follow_log(hub, store, run.id, 1, 5, wait_s=FOREVER))  # type: ignore[arg-type]
        )
        async with asyncio.timeout(DEADLINE):
            await reading.wait()
        assert hub.tailers[run.id].subscribers
        updated = await store.end_attempt(claimed.id, 1, SUCCEEDED)
        assert updated is not None
        hub.on_transition(updated, RunState.RUNNING)  # before the tailer's first read
        items = await follower
    finally:
        release.set()
    assert b"".join(i.data for i in items if isinstance(i, Chunk)) == b"last\n"
    assert isinstance(items[-1], End) and items[-1].state == "succeeded"


async def test_an_end_while_the_stored_events_are_read_is_not_missed(world) -> None:
    """A watcher that comes (or resumes) as the run ends: the events it must read from the
    store are fixed when it subscribes; the end lands while they are read. Its state event
    must still come before the end of the stream, as it does for a watcher that came later."""
    store, hub, run = world
    claimed = await claim(store, hub)
    store.events_race = partial(finish, store, hub, claimed)
    raced = await collect(follow_events(hub, store, run.id, 0))  # type: ignore[arg-type]
    later = await collect(follow_events(hub, store, run.id, 0))  # type: ignore[arg-type]
    assert raced == later
    assert isinstance(raced[-1], End) and raced[-1].state == "succeeded"
    last = raced[-2]
    assert isinstance(last, RunEvent) and last.kind == "state"
    assert last.data["to"] == "succeeded"


async def test_a_watcher_beside_another_gets_an_end_not_yet_published(world) -> None:
    """With a watcher already following, the events a new one reads from the store are
    bounded by what the hub has published; the end stored but not yet published is past
    that bound, and must still come before the new watcher's end."""
    store, hub, run = world
    await claim(store, hub)
    first = await following(store, hub, run)
    updated = await store.end_attempt(run.id, 1, SUCCEEDED)
    assert updated is not None
    hub.on_transition(updated, RunState.RUNNING)  # its publication is under way, not done
    second = await collect(follow_events(hub, store, run.id, 0))  # type: ignore[arg-type]
    assert await first == second
    assert states_of(second)[-1] == "succeeded" and isinstance(second[-1], End)


async def test_a_watcher_resuming_at_the_last_event_gets_the_end_that_lands_meanwhile(
    world,
) -> None:
    """Resumed at the last event stored: nothing to replay, and the end lands while the
    bound is read."""
    store, hub, run = world
    claimed = await claim(store, hub)
    last = await store.last_event_seq(run.id)
    store.seq_race = partial(finish, store, hub, claimed)
    items = await collect(follow_events(hub, store, run.id, last))  # type: ignore[arg-type]
    assert states_of(items) == ["succeeded"] and isinstance(items[-1], End)


async def test_an_event_stored_while_the_first_watcher_subscribes_is_sent_at_once(world) -> None:
    """The run starts while its first watcher reads the bound of what it must read from the
    store: the start's event is past that bound, and must come live then, not with the run's
    next event (its end, however long it runs)."""
    store, hub, run = world

    async def start() -> None:
        await claim(store, hub)

    store.seq_race = start
    events = follow_events(hub, store, run.id, 0)  # type: ignore[arg-type]
    states = []
    async with asyncio.timeout(DEADLINE):
        async for item in events:
            assert isinstance(item, RunEvent)
            states.append(item.data.get("to"))
            if item.data.get("to") == "running":
                break
    await events.aclose()
    assert states == ["queued", "running"]
    assert hub.watchers == 0


async def test_an_event_stored_after_the_end_is_no_part_of_the_stream(world) -> None:
    """Progress stored after the run's end (a fenced server's late tailer): a watcher that
    was following stops at the end's state event, and so does one that comes later."""
    store, hub, run = world
    claimed = await claim(store, hub)
    live = await following(store, hub, run)
    await finish(store, hub, claimed)
    await store.add_progress(run.id, 1, [(3001.0, {"pct": 100})], offset=10, skipped=0)
    later = await collect(follow_events(hub, store, run.id, 0))  # type: ignore[arg-type]
    assert await live == later
    assert states_of(later)[-1] == "succeeded" and isinstance(later[-2], RunEvent)
    assert later[-2].kind == "state"


async def test_a_watcher_resuming_at_the_end_gets_no_event_stored_after_it(world) -> None:
    """A client that had the run's last state event, not the end of the stream, resumes
    there: what a fenced server's late tailer stored after that event is not sent to it
    either, only the end."""
    store, hub, run = world
    claimed = await claim(store, hub)
    await finish(store, hub, claimed)
    end_seq = await store.last_event_seq(run.id)
    await store.add_progress(run.id, 1, [(3001.0, {"pct": 100})], offset=10, skipped=0)
    items = await collect(follow_events(hub, store, run.id, end_seq))  # type: ignore[arg-type]
    assert len(items) == 1 and isinstance(items[0], End) and items[0].state == "succeeded"


async def test_a_long_history_is_sent_a_page_at_a_time_and_stops_at_the_end(world) -> None:
    """A finished run of 5,000 events: a watcher that has its first event holds a page or two
    of them, never the whole history (40 MB a watcher for 20,000, for one that never reads);
    what was stored after the end is still no part of the stream, from the start or
    resuming in the middle."""
    store, hub, run = world
    claimed = await claim(store, hub)
    await store.add_progress(
        run.id, 1, [(2001.0, {"i": i}) for i in range(5000)], offset=1, skipped=0
    )
    await finish(store, hub, claimed)
    await store.add_progress(run.id, 1, [(3001.0, {"late": True})], offset=2, skipped=0)
    stream = follow_events(hub, store, run.id, 0)  # type: ignore[arg-type]
    first = await anext(stream)
    # by type, not isinstance: a weak proxy among the objects, its referent gone meanwhile,
    # raises ReferenceError when asked for its class (a fresh clone's run)
    held = sum(type(o) is RunEvent for o in gc.get_objects())
    assert held <= 2 * EVENT_PAGE + 10
    rest = [first] + await collect(stream)
    events = [e for e in rest if isinstance(e, RunEvent)]
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert [e.data["i"] for e in events if e.kind == "progress"] == list(range(5000))
    assert events[-1].kind == "state" and events[-1].data["to"] == "succeeded"
    assert isinstance(rest[-1], End)
    middle = await collect(follow_events(hub, store, run.id, 2500))  # type: ignore[arg-type]
    assert [e.seq for e in middle if isinstance(e, RunEvent)] == [e.seq for e in events[2500:]]


async def following(store: RacingStore, hub: StreamHub, run: Run) -> asyncio.Future[list[object]]:
    """A watcher of the run's events from the start, once it has subscribed (it has, by the
    time the first watcher's bound is read: it registers in the same step)."""
    subscribed = asyncio.Event()

    async def mark() -> None:
        subscribed.set()

    store.seq_race = mark
    watcher = asyncio.ensure_future(collect(follow_events(hub, store, run.id, 0)))  # type: ignore[arg-type]
    await subscribed.wait()
    assert hub.watchers == 1
    return watcher


def states_of(items: list[object]) -> list[str]:
    return [i.data["to"] for i in items if isinstance(i, RunEvent) and i.kind == "state"]


async def test_a_publication_the_last_watcher_left_during_keeps_no_cursor(world) -> None:
    """The hub keeps a run's event cursor only while somebody watches the run's events."""
    store, hub, run = world
    claimed = await claim(store, hub)
    sub, _ = await hub.subscribe_events(run.id)
    await finish(store, hub, claimed)

    async def leave() -> None:
        hub.unsubscribe_events(run.id, sub)

    store.events_race = leave  # while the publication reads the events
    await hub.publish_events(run.id)
    assert hub.watchers == 0
    assert run.id not in hub._last_seq


async def test_an_end_written_elsewhere_while_the_listener_was_away_reaches_the_watcher(
    world,
) -> None:
    """In a cluster, the end of a run written by another server while this server's listener
    was reconnecting is never notified here. The listener's resync (its empty payload) must
    bring it to a watcher of the run's events, which waits for no timer."""
    store, hub, run = world
    await claim(store, hub)
    live = asyncio.Event()

    async def read_as_running() -> None:
        live.set()  # the watcher goes on to wait for live events, in this same step

    store.races[store.reads + 1] = read_as_running
    watcher = await following(store, hub, run)
    await live.wait()
    assert await store.end_attempt(run.id, 1, SUCCEEDED) is not None  # by another server
    here = SimpleNamespace(server_id="here", hub=hub, _ended_elsewhere=())
    Lifecycle.run_changed_elsewhere(here, "")  # type: ignore[arg-type]  # the resync
    items = await watcher
    assert states_of(items)[-1] == "succeeded" and isinstance(items[-1], End)


async def test_the_feeds_watchers_re_read_the_list_after_a_resync(world) -> None:
    """The feed carries notifications, not history: after the listener's resync, what it
    missed cannot be told item by item, so each watcher is dropped with `lagged` (the
    dashboard then re-reads the runs list), and the feed holds none of them any more."""
    _, hub, _ = world
    subs = [hub.feed.subscribe() for _ in range(2)]
    here = SimpleNamespace(server_id="here", hub=hub, _ended_elsewhere=())
    Lifecycle.run_changed_elsewhere(here, "")  # type: ignore[arg-type]  # the resync
    for sub in subs:
        assert await collect(hub.feed.follow(sub)) == [Lagged(0)]
    assert not hub.feed.subscribers


RETRY = AttemptEnd(
    attempt_state=AttemptState.LOST, ended_at=2500.0, run_state=RunState.QUEUED,
    reason="lost: lease lapsed; retrying", outcome="lost",
)  # fmt: skip


async def test_an_attempt_reaped_by_another_server_ends_its_stream_here(world) -> None:
    """Back from a pause, this server hears that another reaped its attempt: the stream of
    that attempt ends, and its tailer and watch go."""
    store, hub, run = world
    hub.feed.subscribe()  # a feed watcher: the running attempt gets a tailer
    await claim(store, hub)
    await hub.track(run.id, 1, fresh=True)
    watcher, _ = hub.tailers[run.id].subscribe()  # a log stream of attempt 1
    assert await store.end_attempt(run.id, 1, RETRY, by="there") is not None
    here = SimpleNamespace(server_id="here", hub=hub, _ended_elsewhere=())
    Lifecycle.run_changed_elsewhere(here, f"{run.id} queued there")  # type: ignore[arg-type]
    async with asyncio.timeout(DEADLINE):
        items = await watcher.drain()
    assert items[-1] == End("queued", 1, None, "ended by another server")
    assert hub.running == {} and hub.tailers == {} and hub.notifier.watches == 0


async def test_late_word_of_an_earlier_attempts_reaping_leaves_the_retry_here_running(
    world,
) -> None:
    """The notification carries no attempt: heard after this server took the retry itself,
    it must not end the stream of the attempt that runs now. The store decides."""
    store, hub, run = world
    hub.feed.subscribe()
    await claim(store, hub)
    assert await store.end_attempt(run.id, 1, RETRY, by="there") is not None
    await claim(store, hub)  # the retry, taken here
    await hub.track(run.id, 2, fresh=True)
    tailer = hub.tailers[run.id]
    here = SimpleNamespace(server_id="here", hub=hub, _ended_elsewhere=())
    heard = asyncio.Event()

    async def read_back() -> None:
        heard.set()

    store.races[store.reads + 1] = read_back  # the hub's read of the run
    Lifecycle.run_changed_elsewhere(here, f"{run.id} queued there")  # type: ignore[arg-type]
    assert not tailer.ended  # not on the word alone
    async with asyncio.timeout(DEADLINE):
        await heard.wait()  # the hub has read the run, and acted on it in that same step
    assert hub.running[run.id][0] == 2 and hub.tailers.get(run.id) is tailer
    assert not tailer.ended

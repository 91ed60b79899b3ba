"""The stream hub: the tailer of each running attempt and the event watchers of each run."""

from __future__ import annotations

import asyncio
import contextlib
from collections import OrderedDict, defaultdict
from collections.abc import Callable, Iterator
from typing import Any

import structlog

from runyard.background import TaskGroup
from runyard.execution.layout import RunPaths
from runyard.models import Run, RunEvent, RunState
from runyard.store import Store
from runyard.streams.changes import ChangeWaiter, RunChanges
from runyard.streams.feed import RunFeed
from runyard.streams.notify import FileNotifier, Handle
from runyard.streams.run_locks import RunLocks
from runyard.streams.subscriber import Closed, End, Subscriber
from runyard.streams.tailer import AttemptTailer

log = structlog.get_logger(__name__)

# Attempts that ended before the hub heard they started (a short program's exit can be
# recorded while its start is still being written): kept so the late start is ignored, and
# bounded, since an attempt that never starts (a failed launch) is never asked about again.
EVENT_PAGE = 1000  # a run's events read at once for its live watchers (then the next page)
MAX_ENDED_EARLY = 4096


def stream_grace_s(shutdown_timeout_s: float) -> float:
    """The part of the shutdown time given to open streams to send their `shutdown` event."""
    return shutdown_timeout_s / 2


class StreamHub:
    def __init__(
        self,
        store: Store,
        paths: Callable[[str], RunPaths],
        *,
        max_buffer_bytes: int = 1024 * 1024,
        poll_interval_s: float = 0.5,
        inotify: bool = True,
    ) -> None:
        self.store = store
        self.paths = paths
        self.max_buffer_bytes = max_buffer_bytes
        self.notifier = FileNotifier(poll_interval_s, inotify=inotify)
        self.tailers: dict[str, AttemptTailer] = {}
        # attempts whose program runs: (attempt, fresh); a tailer is made for one only when
        # somebody watches it, so an unwatched run costs nothing here
        self.running: dict[str, tuple[int, bool]] = {}
        self._handles: dict[str, Handle] = {}
        self._event_subs: dict[str, set[Subscriber]] = defaultdict(set)
        self._last_seq: dict[str, int] = {}
        self._locks = RunLocks()  # a run's event watchers and their last seq
        # one reader of a run's progress file at a time: two readers starting from the same
        # stored offset would both record the same lines (and count the same bad ones)
        self._progress_locks = RunLocks()
        self._ended_early: OrderedDict[str, int] = OrderedDict()
        self.changes = RunChanges()
        self._publishes = TaskGroup("event-publish")  # failures logged, awaited on close
        self.feed = RunFeed(max_buffer_bytes)
        self._lagged_before = 0  # of the hub's own drops and of tailers gone
        self.closed = False
        self.open_streams = 0  # responses (SSE or WebSocket) that follow something here
        self._no_streams = asyncio.Event()
        self._no_streams.set()

    # -- life -------------------------------------------------------------------------------

    def start(self) -> None:
        self.notifier.start()

    @contextlib.contextmanager
    def stream(self) -> Iterator[None]:
        """Held by a response for as long as it streams, so shutdown can wait for it."""
        self.open_streams += 1
        self._no_streams.clear()
        try:
            yield
        finally:
            self.open_streams -= 1
            if not self.open_streams:
                self._no_streams.set()

    async def close_streams(self, timeout_s: float) -> None:
        """Shutdown, before connections are closed: every watcher gets Closed (its stream
        sends a whole `shutdown` event and ends), and new ones get it at once; then wait, at
        most `timeout_s`, for the streams to have sent it."""
        self.closed = True
        for tailer in self.tailers.values():
            for sub in tailer.subscribers:
                sub.close(Closed())
            tailer.subscribers.clear()
        for subs in self._event_subs.values():
            for sub in subs:
                sub.close(Closed())
        self.feed.close()
        self.changes.close()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                await self._no_streams.wait()

    async def close(self) -> None:
        """Shutdown: streams are told (if they were not yet), tailers and the notifier stop."""
        await self.close_streams(0)
        for run_id in list(self.tailers):
            self._drop_tailer(run_id)
        await self._publishes.cancel()
        await self.notifier.stop()

    def note_lagged(self) -> None:
        """A watcher dropped by its response (its connection did not take a send in time)."""
        self._lagged_before += 1

    @property
    def lagged_total(self) -> int:
        """Watchers dropped for falling behind since start: by their buffer (a tailer's, the
        events', the feed's) or by their connection, each once."""
        live = sum(t.lagged_total for t in self.tailers.values())
        return self._lagged_before + live + self.feed.lagged_total

    @property
    def watchers(self) -> int:
        logs = sum(len(t.subscribers) for t in self.tailers.values())
        return logs + sum(len(s) for s in self._event_subs.values()) + len(self.feed.subscribers)

    # -- attempts ---------------------------------------------------------------------------

    async def track(self, run_id: str, attempt: int, fresh: bool) -> None:
        """An attempt's program is running (fresh, or re-adopted after a restart)."""
        if self._ended_early.pop(run_id, 0) >= attempt:
            return  # its end came first: nothing to follow
        self.running[run_id] = (attempt, fresh)
        self._signal(run_id)
        if self.feed or self._event_subs.get(run_id):
            await self.tailer_for(run_id, attempt)  # its progress is watched as it is written

    async def subscribe_feed(self) -> Subscriber:
        """A watcher of every run's changes. While anybody watches, running attempts are
        tailed, so their progress reaches the feed as it is written."""
        sub = self.feed.subscribe()  # closed at once during shutdown
        try:
            for run_id, (attempt, _) in list(self.running.items()):
                await self.tailer_for(run_id, attempt)
        except BaseException:
            # the watcher went away (or a tailer failed) before it got its subscription: left
            # subscribed, it would make every run that starts be tailed for nobody, for good
            self.unsubscribe_feed(sub)
            raise
        return sub

    def unsubscribe_feed(self, sub: Subscriber) -> None:
        self.feed.unsubscribe(sub)
        for run_id in list(self.tailers):
            self.let_go(run_id)

    def _watched(self, run_id: str) -> bool:
        """Whether anybody wants the run's running attempt followed as it writes: its log's
        watchers, its events' (progress is an event), the feed's (every run's progress)."""
        tailer = self.tailers.get(run_id)
        return bool(self.feed or self._event_subs.get(run_id) or (tailer and tailer.subscribers))

    def let_go(self, run_id: str) -> None:
        """A watcher left: the run's tailer goes if nobody else wants it. Kept, it would read
        the log of a running program for nobody, on every write, until the program ended."""
        if run_id in self.tailers and not self._watched(run_id) and not self.closed:
            self._publishes.start(self._retire(run_id))

    async def _retire(self, run_id: str) -> None:
        # under the run's progress lock: a reader made meanwhile (a new watcher's tailer, the
        # attempt's end) waits, then resumes from the progress this one stored
        async with self._progress_locks.hold(run_id):
            tailer = self.tailers.get(run_id)
            if tailer is None or self._watched(run_id) or self.closed:
                return  # ended meanwhile, or watched again
            self._forget(run_id)
            await tailer.retire()

    async def tailer_for(self, run_id: str, attempt: int) -> AttemptTailer | None:
        """The running attempt's tailer, made on first use; None if it is not running."""
        tailer = self.tailers.get(run_id)
        if tailer is not None and tailer.attempt == attempt:
            return tailer
        if self.running.get(run_id, (None,))[0] != attempt or self.closed:
            return None
        async with self._progress_locks.hold(run_id):
            tailer = self.tailers.get(run_id)
            if tailer is None or tailer.attempt != attempt:
                tailer = await self._new_tailer(run_id, attempt)
                if self.running.get(run_id, (None,))[0] != attempt or self.closed:
                    return None  # it ended (or shutdown began) while the tailer was made
                self.tailers[run_id] = tailer
                self._handles[run_id] = self.notifier.watch(tailer.paths.root, tailer.wake)
                tailer.start()
            tailer.wake()  # progress written before the tailer existed
        return tailer

    async def _new_tailer(self, run_id: str, attempt: int) -> AttemptTailer:
        """A tailer that resumes progress where the store says it was last read."""
        offset = await self.store.progress_offset(run_id, attempt)
        return AttemptTailer(
            run_id, attempt, self.paths(run_id), self.store, self._progress_read,
            progress_offset=offset, max_buffer_bytes=self.max_buffer_bytes,
        )  # fmt: skip

    async def refresh_progress(self, run_id: str, attempt: int, *, final: bool = False) -> None:
        """Read new progress lines of a running attempt nobody watches (on a run's read; at
        its end, `final`)."""
        async with self._progress_locks.hold(run_id):
            tailer = self.tailers.get(run_id)
            if tailer is None or tailer.attempt != attempt:
                tailer = await self._new_tailer(run_id, attempt)
            await tailer.pump_progress(final=final)

    async def attempt_ending(self, run_id: str, attempt: int, progress_bytes: int | None) -> None:
        """Before the end of an attempt is recorded: read its last output and progress, so
        progress events come before the final state event."""
        tailer = self.tailers.get(run_id)
        if tailer is not None and tailer.attempt == attempt:
            await tailer.finish()
            return
        if progress_bytes == 0:
            return  # unwatched and no progress written: nothing to read
        await self.refresh_progress(run_id, attempt, final=True)

    def on_transition(self, run: Run, previous: RunState) -> None:
        """Dispatcher listener (synchronous): end tailers of attempts that ended, publish."""
        if previous is RunState.RUNNING:
            if self.running.pop(run.id, None) is None:
                self._remember_ended_early(run.id, run.attempt)
            tailer = self.tailers.get(run.id)
            if tailer is not None and (run.state is not RunState.RUNNING or tailer.ended):
                self._drop_tailer(run.id)
                tailer.end(End(run.state.value, tailer.attempt, run.exit_code, run.reason))
        self._signal(run.id)
        self.feed.offer("run", {"id": run.id, "job": run.job, "state": run.state.value,
                                "reason": run.reason})  # fmt: skip
        if run.id in self._event_subs:
            self._publishes.start(self.publish_events(run.id))

    def _remember_ended_early(self, run_id: str, attempt: int) -> None:
        self._ended_early[run_id] = attempt
        self._ended_early.move_to_end(run_id)
        while len(self._ended_early) > MAX_ENDED_EARLY:
            self._ended_early.popitem(last=False)

    def _drop_tailer(self, run_id: str) -> None:
        """Everything a tailer holds goes with it: its task, its watch, its entry."""
        tailer = self._forget(run_id)
        if tailer is not None:
            tailer.stop()

    def _forget(self, run_id: str) -> AttemptTailer | None:
        tailer = self.tailers.pop(run_id, None)
        if tailer is not None:
            self._lagged_before += tailer.lagged_total
        handle = self._handles.pop(run_id, None)
        if handle is not None:
            self.notifier.unwatch(handle)
        return tailer

    def changed_elsewhere(self, run_id: str, state: str) -> None:
        """Another server moved this run: its events are in the store, for watchers here."""
        held = self.running.get(run_id)
        if state != RunState.RUNNING.value and held is not None:
            # our attempt may have been ended there (reaped: our lease lapsed while we were
            # paused); the store says whether it is the one followed here (word of an older
            # attempt's reaping, heard late, must not end the retry this server runs now)
            self._publishes.start(self._ended_there(run_id, held[0], state))
        self._signal(run_id)
        self.feed.offer("run", {"id": run_id, "state": state})
        if run_id in self._event_subs:
            self._publishes.start(self.publish_events(run_id))

    async def _ended_there(self, run_id: str, attempt: int, heard: str) -> None:
        run = await self.store.get_run(run_id)
        held = self.running.get(run_id)
        if held is None or held[0] != attempt:
            return  # ended here meanwhile, or another attempt is followed now
        if run is not None and run.attempt == attempt and run.state is RunState.RUNNING:
            return  # it runs on: the change was of an earlier attempt
        del self.running[run_id]
        tailer = self.tailers.get(run_id)
        self._drop_tailer(run_id)
        if tailer is not None:
            state = run.state.value if run is not None else heard
            tailer.end(End(state, attempt, None, "ended by another server"))
        self._signal(run_id)

    def resync(self) -> None:
        """What other servers said may have been missed (the cluster's listener reconnected):
        every run followed here is read again, its events published to their watchers, its
        log's followers woken, and the feed's watchers re-read the list. Without it, an end
        written elsewhere meanwhile never reaches an events stream here, which waits for no
        timer."""
        for run_id in list(self._event_subs):
            self._publishes.start(self.publish_events(run_id))
        self.changes.notify_all()
        self.feed.resync()

    async def _progress_read(self, run_id: str, latest: dict[str, Any] | None) -> None:
        if latest is not None:
            self.feed.offer("progress", {"id": run_id, "progress": latest})
        await self.publish_events(run_id)

    # -- waiting for a run to change ----------------------------------------------------------

    def _signal(self, run_id: str) -> None:
        self.changes.notify(run_id)

    def watch_changes(self, run_id: str) -> contextlib.AbstractContextManager[ChangeWaiter]:
        """A waiter for the run's next change, armed now: enter it before reading the run."""
        return self.changes.watch(run_id)

    # -- events -----------------------------------------------------------------------------

    async def subscribe_events(self, run_id: str) -> tuple[Subscriber, int]:
        """A watcher of the run's events, and the seq up to which it must read the store;
        later events come through its queue."""
        sub = Subscriber(self.max_buffer_bytes)
        async with self._locks.hold(run_id):
            first = run_id not in self._last_seq or not self._event_subs.get(run_id)
            # Watching before the bound is read: an event stored while it is read starts a
            # publication (which waits for this lock, then sends what is past the bound).
            # Registered after, the first watcher missed that publication, and had the event
            # only with the run's next one, minutes later for a quiet run.
            self._event_subs[run_id].add(sub)
            if first:
                try:
                    self._last_seq[run_id] = await self.store.last_event_seq(run_id)
                except BaseException:
                    self.unsubscribe_events(run_id, sub)
                    raise
            if self.closed:
                sub.close(Closed())
            upto = self._last_seq[run_id]
        held = self.running.get(run_id)
        try:
            if held is not None:  # its progress, as it is written, is among its events
                await self.tailer_for(run_id, held[0])
        except BaseException:
            self.unsubscribe_events(run_id, sub)
            raise
        return sub, upto

    def unsubscribe_events(self, run_id: str, sub: Subscriber) -> None:
        subs = self._event_subs.get(run_id)
        if subs is not None:
            subs.discard(sub)
            if not subs:
                self._event_subs.pop(run_id, None)
                self._last_seq.pop(run_id, None)
                self.let_go(run_id)

    async def publish_events(self, run_id: str) -> None:
        if not self._event_subs.get(run_id):
            return
        async with self._locks.hold(run_id):
            subs = self._event_subs.get(run_id)
            if not subs:
                return
            # page by page to the last: a burst longer than one page (a run's progress lines
            # read at its end) left what followed it, its end included, for no one to send
            while True:
                events: list[RunEvent] = await self.store.list_events(
                    run_id, self._last_seq.get(run_id, 0), EVENT_PAGE
                )
                if self._event_subs.get(run_id) is not subs:
                    return  # the last watcher left meanwhile, and its cursor went with it
                for event in events:
                    self._last_seq[run_id] = event.seq
                    for sub in list(subs):
                        if not sub.offer(event, 256 + len(str(event.data))):
                            subs.discard(sub)
                            self._lagged_before += 1
                if len(events) < EVENT_PAGE or not subs:
                    return

"""The stream hub: the tailer of each running attempt and the event watchers of each run."""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import structlog

from runyard.execution.layout import RunPaths
from runyard.models import Run, RunEvent, RunState
from runyard.store import Store
from runyard.streams.feed import RunFeed
from runyard.streams.keyed import KeyedLock
from runyard.streams.notify import FileNotifier, Handle
from runyard.streams.subscriber import Closed, End, Subscriber
from runyard.streams.tailer import AttemptTailer

log = structlog.get_logger(__name__)


class StreamHub:
    def __init__(
        self,
        store: Store,
        paths: Callable[[str], RunPaths],
        *,
        max_buffer_bytes: int = 1024 * 1024,
        poll_interval_s: float = 0.5,
    ) -> None:
        self.store = store
        self.paths = paths
        self.max_buffer_bytes = max_buffer_bytes
        self.notifier = FileNotifier(poll_interval_s)
        self.tailers: dict[str, AttemptTailer] = {}
        # attempts whose program runs: (attempt, fresh); a tailer is made for one only when
        # somebody watches it, so an unwatched run costs nothing here
        self.running: dict[str, tuple[int, bool]] = {}
        self._handles: dict[str, Handle] = {}
        self._event_subs: dict[str, set[Subscriber]] = defaultdict(set)
        self._last_seq: dict[str, int] = {}
        self._locks = KeyedLock()  # a run's event watchers and their last seq
        # one reader of a run's progress file at a time: two readers starting from the same
        # stored offset would both record the same lines (and count the same bad ones)
        self._progress_locks = KeyedLock()
        self._changed: dict[str, asyncio.Event] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.feed = RunFeed(max_buffer_bytes)
        self.lagged_total = 0
        self.closed = False

    # -- life -------------------------------------------------------------------------------

    def start(self) -> None:
        self.notifier.start()

    async def close(self) -> None:
        """Shutdown: every watcher gets Closed, so streams end instead of holding the exit."""
        self.closed = True
        for tailer in self.tailers.values():
            for sub in tailer.subscribers:
                sub.close(Closed())
        for subs in self._event_subs.values():
            for sub in subs:
                sub.close(Closed())
        for event in self._changed.values():
            event.set()
        self.feed.close()
        await self.notifier.stop()

    @property
    def watchers(self) -> int:
        logs = sum(len(t.subscribers) for t in self.tailers.values())
        return logs + sum(len(s) for s in self._event_subs.values()) + len(self.feed.subscribers)

    # -- attempts ---------------------------------------------------------------------------

    async def track(self, run_id: str, attempt: int, fresh: bool) -> None:
        """An attempt's program is running (fresh, or re-adopted after a restart)."""
        self.running[run_id] = (attempt, fresh)
        self._signal(run_id)
        if self.feed:
            await self.tailer_for(run_id, attempt)  # the feed carries its progress

    async def subscribe_feed(self) -> Subscriber:
        """A watcher of every run's changes. While anybody watches, running attempts are
        tailed, so their progress reaches the feed as it is written."""
        sub = self.feed.subscribe()
        for run_id, (attempt, _) in list(self.running.items()):
            await self.tailer_for(run_id, attempt)
        return sub

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

    async def refresh_progress(self, run_id: str, attempt: int) -> None:
        """Read new progress lines of a running attempt nobody watches (on a run's read)."""
        async with self._progress_locks.hold(run_id):
            tailer = self.tailers.get(run_id)
            if tailer is None or tailer.attempt != attempt:
                tailer = await self._new_tailer(run_id, attempt)
            await tailer.pump_progress()

    async def attempt_ending(self, run_id: str, attempt: int, progress_bytes: int | None) -> None:
        """Before the end of an attempt is recorded: read its last output and progress, so
        progress events come before the final state event."""
        tailer = self.tailers.get(run_id)
        if tailer is not None and tailer.attempt == attempt:
            await tailer.finish()
            return
        if progress_bytes == 0:
            return  # unwatched and no progress written: nothing to read
        await self.refresh_progress(run_id, attempt)

    def on_transition(self, run: Run, previous: RunState) -> None:
        """Dispatcher listener (synchronous): end tailers of attempts that ended, publish."""
        if previous is RunState.RUNNING:
            self.running.pop(run.id, None)
            tailer = self.tailers.get(run.id)
            if tailer is not None and (run.state is not RunState.RUNNING or tailer.ended):
                self._drop_tailer(run.id)
                tailer.end(End(run.state.value, tailer.attempt, run.exit_code, run.reason))
        self._signal(run.id)
        self.feed.offer("run", {"id": run.id, "job": run.job, "state": run.state.value,
                                "reason": run.reason})  # fmt: skip
        if run.id in self._event_subs:
            task = asyncio.create_task(self.publish_events(run.id))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _drop_tailer(self, run_id: str) -> None:
        tailer = self.tailers.pop(run_id, None)
        if tailer is not None:
            self.lagged_total += tailer.lagged_total
        handle = self._handles.pop(run_id, None)
        if handle is not None:
            self.notifier.unwatch(handle)

    def changed_elsewhere(self, run_id: str, state: str) -> None:
        """Another server moved this run: its events are in the store, for watchers here."""
        self._signal(run_id)
        self.feed.offer("run", {"id": run_id, "state": state})
        if run_id in self._event_subs:
            task = asyncio.create_task(self.publish_events(run_id))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _progress_read(self, run_id: str, latest: dict[str, Any] | None) -> None:
        if latest is not None:
            self.feed.offer("progress", {"id": run_id, "progress": latest})
        await self.publish_events(run_id)

    # -- waiting for a run to change ----------------------------------------------------------

    def _signal(self, run_id: str) -> None:
        event = self._changed.pop(run_id, None)
        if event is not None:
            event.set()

    async def changed(self, run_id: str, wait_s: float) -> None:
        """Return when the run next changes (or after `wait_s`, to re-check regardless)."""
        event = self._changed.setdefault(run_id, asyncio.Event())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), wait_s)

    # -- events -----------------------------------------------------------------------------

    async def subscribe_events(self, run_id: str) -> tuple[Subscriber, int]:
        """A watcher of the run's events, and the seq up to which it must read the store;
        later events come through its queue."""
        async with self._locks.hold(run_id):
            if run_id not in self._last_seq or not self._event_subs.get(run_id):
                self._last_seq[run_id] = await self.store.last_event_seq(run_id)
            sub = Subscriber(self.max_buffer_bytes)
            self._event_subs[run_id].add(sub)
            return sub, self._last_seq[run_id]

    def unsubscribe_events(self, run_id: str, sub: Subscriber) -> None:
        subs = self._event_subs.get(run_id)
        if subs is not None:
            subs.discard(sub)
            if not subs:
                self._event_subs.pop(run_id, None)
                self._last_seq.pop(run_id, None)

    async def publish_events(self, run_id: str) -> None:
        if not self._event_subs.get(run_id):
            return
        async with self._locks.hold(run_id):
            subs = self._event_subs.get(run_id)
            if not subs:
                return
            events: list[RunEvent] = await self.store.list_events(
                run_id, self._last_seq.get(run_id, 0)
            )
            for event in events:
                self._last_seq[run_id] = event.seq
                for sub in list(subs):
                    if not sub.offer(event, 256 + len(str(event.data))):
                        subs.discard(sub)
                        self.lagged_total += 1

"""The tailer of one running attempt: reads new log bytes and progress lines once, fans out.

Woken by the notifier (or explicitly at the end); each wake reads, and parses progress, in a
worker thread, so the program, the event loop and other watchers never wait for a slow one.
Progress is written to the store at most every PROGRESS_EVERY_S, what was read meanwhile
coalesced to its last lines (chunks.PROGRESS_KEEP): a program that writes progress as fast as
it can costs the store a few small transactions a second, not one per read.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import structlog

from runyard.bad_days import log_failure
from runyard.execution.layout import RunPaths
from runyard.store import Store
from runyard.streams.chunks import PROGRESS_KEEP, ProgressParser, split_chunks
from runyard.streams.cursor import FileCursor, Read, read_latest, read_on
from runyard.streams.subscriber import Chunk, End, Lagged, Subscriber

log = structlog.get_logger(__name__)

READ_MAX = 256 * 1024  # per file per pump: a burst stays well under a watcher's buffer
# progress unread past this is passed over but for its last READ_MAX (only the latest counts)
PROGRESS_BEHIND_MAX = 4 * READ_MAX
# what an ended attempt's log is read on for its watchers before its end is recorded
FINISH_LOG_MAX = 64 * 2**20
NONE = Read(b"", False)
PROGRESS_EVERY_S = 0.05  # an attempt's progress is written at most this often (but at its end)


@dataclass
class _Read:
    log: Read
    progress_bytes: int  # how much of the progress file this read took
    progress: list[dict[str, Any]]  # what of it is progress, coalesced


def read_at(fd: int, offset: int, limit: int) -> bytes:
    """Up to `limit` bytes of the open file from `offset`; nothing past the end (an offset
    beyond any file size the kernel allows would make a read fail: it is never attempted)."""
    if offset >= os.fstat(fd).st_size:
        return b""
    return os.pread(fd, limit, offset)


class AttemptTailer:
    def __init__(
        self,
        run_id: str,
        attempt: int,
        paths: RunPaths,
        store: Store,
        on_progress: Callable[[str, dict[str, Any] | None], Awaitable[None]],
        *,
        log_offset: int = 0,
        progress_offset: int = 0,
        max_buffer_bytes: int = 1024 * 1024,
    ) -> None:
        self.run_id = run_id
        self.attempt = attempt
        self.paths = paths
        self.store = store
        self.on_progress = on_progress
        self.log_read = FileCursor(log_offset)  # everything before it has been published
        self.parser = ProgressParser(consumed=progress_offset)
        self._skipped_seen = 0  # of the parser's count, what has been held
        self._progress = FileCursor(progress_offset)  # moved in the reading thread
        # read, not yet written: the last PROGRESS_KEEP of them, and the bad lines' count
        self._held: list[tuple[float, dict[str, Any]]] = []
        self._held_skipped = 0
        self._written_at = -PROGRESS_EVERY_S
        self._due: asyncio.TimerHandle | None = None
        self.max_buffer_bytes = max_buffer_bytes
        self.subscribers: set[Subscriber] = set()
        self.lagged_total = 0
        self._dirty = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._pump_lock = asyncio.Lock()
        self.ended = False

    def start(self) -> None:
        # No read yet: file changes wake it, and so does the first watcher (below), which
        # catches output written before the watch existed.
        self._task = asyncio.create_task(self._loop(), name=f"tailer-{self.run_id}")

    def wake(self) -> None:
        self._dirty.set()

    def stop(self) -> None:
        """Stop following (its attempt is over, or nobody may watch any more)."""
        if self._task is not None:
            self._task.cancel()
            self._task = None
        self._cancel_due()

    async def retire(self) -> None:
        """Nobody watches any more, and the attempt runs on: stop following, once the read or
        write under way is over, and store the progress read and held back, so whoever reads
        next (a new tailer, a run's read, its end) resumes after it, not before it."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.wait([task])
        try:
            async with self._pump_lock:
                await self._write_progress(True)
        finally:
            self._cancel_due()

    def _cancel_due(self) -> None:
        if self._due is not None:
            self._due.cancel()
            self._due = None

    def _when_due(self) -> None:
        self._due = None
        self._dirty.set()

    def subscribe(self) -> tuple[Subscriber, int]:
        """A new watcher, and the offset from which the queue will carry the log: the watcher
        reads the file up to it, so nothing is missed and nothing repeated."""
        sub = Subscriber(self.max_buffer_bytes)
        self.subscribers.add(sub)
        self._dirty.set()
        return sub, self.log_read.offset

    def unsubscribe(self, sub: Subscriber) -> None:
        self.subscribers.discard(sub)

    async def _loop(self) -> None:
        while True:
            await self._dirty.wait()
            self._dirty.clear()
            try:
                await self.pump()
            except Exception as exc:
                # a failed read or progress write (a full disk, a busy store) must not end
                # the tailer: its watchers would stall; the next change retries
                log_failure(
                    log, "tailer_pump_failed", exc, run_id=self.run_id, attempt=self.attempt
                )

    async def pump(self) -> None:
        """Read what is new; progress written if it is due, else held until it is."""
        async with self._pump_lock:
            got = await self._read_off_loop(True)
            if len(got.log.data) == READ_MAX or got.progress_bytes == READ_MAX:
                self._dirty.set()  # more is waiting
            if got.log.restarted:
                self._log_rewritten()
            self._publish(got.log.data)
            self._hold(got)
            await self._write_progress(False)

    async def pump_progress(self, *, final: bool = False) -> None:
        """Read only new progress lines (until none is left), and write them. `final`: the
        program has ended, and a last line without its newline counts too."""
        async with self._pump_lock:
            while True:
                got = await self._read_off_loop(False)
                self._hold(got)
                if got.progress_bytes < READ_MAX:
                    break
            if final:
                self._hold(_Read(log=NONE, progress_bytes=0, progress=self.parser.close()))
            await self._write_progress(True)

    async def _read_off_loop(self, with_log: bool) -> _Read:
        """`_read` in a worker thread, under the pump lock. A read under way cannot be
        stopped: a cancel (the tailer finished or stopped meanwhile) waits for it to end and
        keeps the progress it parsed before the lock is let go. Let go at once, the next
        pump read beside it, both moving the progress cursor and parser (lines counted twice,
        or the first read's lost); the log it read is read again (its cursor moves later)."""
        reading = asyncio.ensure_future(asyncio.to_thread(self._read, with_log))
        try:
            return await asyncio.shield(reading)
        except asyncio.CancelledError:
            while not reading.done():
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.wait([reading])
            if not reading.cancelled() and reading.exception() is None:
                self._hold(reading.result())
            raise

    def _read(self, with_log: bool) -> _Read:
        """In a worker thread, under the pump lock (the parser is used by nobody else)."""
        path = self.paths.progress_file(self.attempt)
        got = read_latest(path, self._progress, READ_MAX, PROGRESS_BEHIND_MAX)
        if got.restarted:
            self._progress.restart()
            self.parser.restart()
        if got.jumped_to is not None:
            self._progress.offset, self._progress.tail = got.jumped_to, b""
            self.parser.jump(got.jumped_to)
        self._progress.advance(got.data)
        return _Read(
            log=read_on(self.paths.log(self.attempt), self.log_read, READ_MAX)
            if with_log
            else NONE,
            progress_bytes=len(got.data),
            progress=self.parser.feed(got.data) if got.data else [],
        )

    def _hold(self, got: _Read) -> None:
        if got.progress:
            now = time.time()
            self._held += [(now, item) for item in got.progress]
            if len(self._held) > PROGRESS_KEEP:
                self.parser.coalesced += len(self._held) - PROGRESS_KEEP
                del self._held[:-PROGRESS_KEEP]
        self._held_skipped += self.parser.skipped - self._skipped_seen
        self._skipped_seen = self.parser.skipped

    async def _write_progress(self, now: bool) -> None:
        if not self._held and not self._held_skipped:
            return
        wait = self._written_at + PROGRESS_EVERY_S - time.monotonic()
        if wait > 0 and not now:
            if self._due is None:
                self._due = asyncio.get_running_loop().call_later(wait, self._when_due)
            return
        self._cancel_due()
        events, skipped = self._held, self._held_skipped
        self._held, self._held_skipped = [], 0
        self._written_at = time.monotonic()
        writing = asyncio.ensure_future(self.store.add_progress(
            self.run_id, self.attempt, events, offset=self.parser.consumed, skipped=skipped
        ))  # fmt: skip
        try:
            await asyncio.shield(writing)
        except asyncio.CancelledError:
            # The tailer finished as its pump wrote (the run's last lines, often): abandoned,
            # the write was dropped before the store ran it, and the lines it held with it,
            # which its cursor had passed: the run ended showing older progress. It ends first.
            while not writing.done():
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.wait([writing])
            if writing.cancelled() or writing.exception() is not None:  # nothing stored
                self._held, self._held_skipped = events + self._held, skipped + self._held_skipped
            raise
        await self.on_progress(self.run_id, events[-1][1] if events else None)

    def _log_rewritten(self) -> None:
        """The program cut its log back or rewrote it: what was published is no longer the
        file. Its watchers are told to resume from 0 (what is there now), and the tailer goes
        on from the file's new start."""
        log.warning("log_rewritten", run_id=self.run_id, attempt=self.attempt,
                    published=self.log_read.offset)  # fmt: skip
        self.log_read.restart()
        for sub in self.subscribers:
            sub.close(Lagged(0))
        self.subscribers.clear()

    def _publish(self, data: bytes) -> None:
        for piece in split_chunks(data):
            chunk = Chunk(self.log_read.offset, piece)
            self.log_read.advance(piece)
            for sub in list(self.subscribers):
                if not sub.offer(chunk, len(piece)):
                    self.subscribers.discard(sub)  # dropped: it resumes from its last id
                    self.lagged_total += 1

    async def finish(self) -> None:
        """The program ended: read what is left, then stop following."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        start = self.log_read.offset
        while self.subscribers:  # the log is read here for its watchers alone
            before = self.log_read.offset
            await self.pump()
            if self.log_read.offset == before:
                break
            if self.log_read.offset - start > FINISH_LOG_MAX:
                # a log still growing (endless, or sparse: terabytes of it): the run's end
                # does not wait on it. Its watchers resume from the file, as after a lag
                for sub in self.subscribers:
                    sub.lag()
                self.subscribers.clear()
        await self.pump_progress(final=True)  # bounded (read_latest), and what was held back
        self._cancel_due()
        if self.parser.coalesced:
            log.info("progress_coalesced", run_id=self.run_id, attempt=self.attempt,
                     lines=self.parser.coalesced)  # fmt: skip

    def end(self, final: End) -> None:
        """Tell every watcher the attempt is over."""
        self.ended = True
        for sub in self.subscribers:
            sub.close(final)
        self.subscribers.clear()

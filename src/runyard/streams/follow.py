"""Following one run: its log from a byte offset, its events from a sequence number.

Both subscribe first and then catch up from the durable source (the log file, the events
table) up to the point where the subscription starts, so a watcher that joins or resumes at
any moment gets every byte or event once, in order.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing
from pathlib import Path

from runyard.models import Run, RunEvent, RunState
from runyard.regular_files import open_regular
from runyard.store import Store
from runyard.streams.changes import ChangeWaiter
from runyard.streams.chunks import split_chunks
from runyard.streams.hub import StreamHub
from runyard.streams.subscriber import Chunk, Closed, End, Following, Lagged, Subscriber
from runyard.streams.tailer import AttemptTailer, read_at

LogItem = Chunk | Following | End | Lagged | Closed
EventItem = RunEvent | End | Lagged | Closed


def _end(run: Run, attempt: int) -> End:
    return End(run.state.value, attempt, run.exit_code, run.reason)


async def _attempt_end(store: Store, run: Run, number: int) -> End:
    """The end of attempt `number`: the run's state now, with that attempt's own exit code
    and why it ended. An earlier attempt of a run retried since was told the run's (a first
    attempt that exited 3 said exit code 0, its retry's)."""
    if number == run.attempt:
        return _end(run, number)
    own = next((a for a in await store.get_attempts(run.id) if a.number == number), None)
    if own is None:
        return End(run.state.value, number, None, None)
    why = (
        f"attempt {number}: exit code {own.exit_code}"
        if own.exit_code is not None
        else (
            f"attempt {number}: {own.outcome or 'ended'}"
            + (f" (signal {own.signal})" if own.signal is not None else "")
        )
    )
    return End(run.state.value, number, own.exit_code, why)


# What a replay reads of the file at a time, and holds while its watcher takes it: a watcher
# that stops reading holds it until the write-stall cut (a probe: 800 of them on a 13 MB log,
# 256 KiB reads and every piece of each copied out, took 330 MB)
REPLAY_READ = 64 * 1024


async def _file_chunks(path: Path, start: int, stop: int | None) -> AsyncIterator[Chunk]:
    """The file's bytes from `start` up to `stop` (or its current end), in chunks, read
    through one descriptor: a log removed while it is read (its run deleted, or its TTL over)
    is read to its end all the same, as a download of an artifact is. Opened again for each
    chunk, it was cut where the removal fell, and its stream ended there with no `end` (a
    probe: 26.6 MB of 40, like a dropped connection)."""
    try:
        fd, _ = await asyncio.to_thread(open_regular, path)
    except OSError:  # not there (yet), or its program made something else of it
        return
    try:
        offset = start
        while stop is None or offset < stop:
            limit = REPLAY_READ if stop is None else min(REPLAY_READ, stop - offset)
            data = await asyncio.to_thread(read_at, fd, offset, limit)
            if not data:
                return
            for piece in split_chunks(data):
                yield Chunk(offset, piece)
                offset += len(piece)
    finally:
        os.close(fd)  # a regular file's: nothing to wait for


async def _consume(sub: Subscriber, offset: int) -> AsyncIterator[LogItem]:
    while True:
        for item in await sub.drain():
            if isinstance(item, Chunk):
                if item.end <= offset:
                    continue
                piece = (
                    item
                    if item.start >= offset
                    else Chunk(offset, item.data[offset - item.start :])
                )
                offset = piece.end
                yield piece
            else:
                yield item
                return
        if sub.lagged:
            yield Lagged(offset)
            return


def attempt_may_come(run: Run, number: int) -> bool:
    """Whether the run has attempt `number`, or it is the next: any other is refused before a
    stream starts, as a log page refuses it (followed, it was waited for until the run ended,
    then told ended with the state and exit code of another attempt). The next one is always
    taken, whatever the run's state now: a watcher that saw the run queued for a retry asks
    for it, and the run may be cancelled, or end, before that request arrives; its stream
    then ends at once naming the run's last attempt, as one open already does. Nor can its
    coming be told from the run alone (a spawn that never started re-queues it whatever
    `max_attempts` says)."""
    return number <= run.attempt + 1


async def _attempt_to_follow(
    hub: StreamHub,
    store: Store,
    run_id: str,
    attempt: int | None,
    changes: ChangeWaiter,
    wait_s: float,
) -> tuple[Run, int] | None:
    """The run and the attempt number to follow (default: the latest); one not started yet
    (a queued run's first, a retry's) is waited for, until the run has it or is over.
    `changes` was armed before the first read, so a start between a read and the wait is
    never missed."""
    run = await store.get_run(run_id)
    while run is not None and run.attempt < (attempt or 1) and not run.state.terminal:
        if hub.closed:
            return None
        await changes.wait(wait_s)
        run = await store.get_run(run_id)
    if run is None:
        return None
    return run, attempt or max(run.attempt, 1)


async def _through_tailer(
    hub: StreamHub, tailer: AttemptTailer, path: Path, offset: int
) -> AsyncGenerator[LogItem, None]:
    sub, upto = tailer.subscribe()
    try:
        async for chunk in _file_chunks(path, offset, upto):
            offset = chunk.end
            yield chunk
            if hub.closed:  # shutdown during a long catch-up: stop between whole chunks
                yield Closed()
                return
        async for item in _consume(sub, offset):
            if isinstance(item, End):
                # a tailer made while its attempt was ending may hear the end before its
                # first read: the file, complete by now, gives what it did not publish
                async for chunk in _file_chunks(path, offset, None):
                    yield chunk
            elif isinstance(item, Chunk):
                offset = max(offset, item.end)
            yield item
    finally:
        tailer.unsubscribe(sub)
        hub.let_go(tailer.run_id)


async def follow_log(
    hub: StreamHub,
    store: Store,
    run_id: str,
    attempt: int | None,
    offset: int,
    *,
    wait_s: float = 5.0,
) -> AsyncIterator[LogItem]:
    """Yield the attempt's log from `offset` as it grows; End when the attempt is over."""
    with hub.watch_changes(run_id) as changes:  # armed before anything is read
        found = await _attempt_to_follow(hub, store, run_id, attempt, changes, wait_s)
        if found is None:
            yield Closed()
            return
        run, number = found
        if number > max(run.attempt, 1) or (run.attempt == 0 and run.state.terminal):
            # the run ended without the attempt waited for: its end is its last attempt's
            # (none: a queued run cancelled, told as attempt 0, as its events and the run say;
            # it was told as the attempt 1 it never had, announced first as followed)
            yield _end(run, run.attempt)
            return
        yield Following(number)
        # closed with this one, not when the collector gets to it: its tailer is let go then
        following = _follow_attempt(hub, store, run, number, offset, changes, wait_s)
        async with aclosing(following):
            async for item in following:
                yield item


async def _replay(hub: StreamHub, path: Path, offset: int) -> AsyncIterator[Chunk]:
    """The file as it is now; a long replay stops between whole chunks at shutdown."""
    async for chunk in _file_chunks(path, offset, None):
        yield chunk
        if hub.closed:
            return


async def _follow_attempt(
    hub: StreamHub,
    store: Store,
    run: Run,
    number: int,
    offset: int,
    changes: ChangeWaiter,
    wait_s: float,
) -> AsyncGenerator[LogItem, None]:
    run_id = run.id
    path = hub.paths(run_id).log(number)
    while not hub.closed:
        tailer = await hub.tailer_for(run_id, number)
        if tailer is not None and not tailer.ended:
            async with aclosing(_through_tailer(hub, tailer, path, offset)) as items:
                async for item in items:
                    yield item
            return
        async for chunk in _replay(hub, path, offset):
            offset = chunk.end
            yield chunk
        latest = await store.get_run(run_id)
        if latest is None:
            if run.state.terminal:  # deleted while its log was read: read whole all the same
                yield await _attempt_end(store, run, number)
            return
        if hub.closed:
            break
        if latest.attempt != number or latest.state is not RunState.RUNNING:
            async for chunk in _file_chunks(path, offset, None):  # the last bytes
                yield chunk
            yield await _attempt_end(store, latest, number)
            return
        await changes.wait(wait_s)  # starting: its tailer is about to appear
    yield Closed()


_EVERY = 2**63 - 1  # as `upto`: every event stored
EVENT_PAGE = 1000  # stored events read at a time for a watcher
# and no more than this of their data: a watcher that reads nothing holds its page (a
# probe: 1,000 progress events of 16 KiB, 16 MiB a watcher, 1.8 GB for a hundred of them)
EVENT_PAGE_BYTES = 256 * 1024


def _ends(event: RunEvent) -> bool:
    """The state event that moved the run to a terminal state."""
    return event.kind == "state" and RunState(event.data["to"]).terminal


def _ending(events: list[RunEvent]) -> int | None:
    """Where the state event that ended the run is among `events`, if it is."""
    return next((i for i, e in enumerate(events) if _ends(e)), None)


async def _stored_pages(
    store: Store, run_id: str, after: int, upto: int
) -> AsyncIterator[list[RunEvent]]:
    """The stored events in (after, upto], a page at a time: a run's whole history is never
    held for a watcher (a finished run of 20,000 events held 40 MB per watcher that did not
    read), nor a page of more than EVENT_PAGE_BYTES."""
    last = after
    while last < upto:
        found = await store.list_events(run_id, last, EVENT_PAGE, EVENT_PAGE_BYTES)
        page = [e for e in found if e.seq <= upto]
        if not page:
            return
        yield page
        last = page[-1].seq


async def _ended_events(store: Store, run_id: str, after: int) -> AsyncIterator[RunEvent]:
    """An ended run's events after `after`, up to the state event that ended it. What was
    stored after that event (a fenced server's late progress) is no part of it, nor is
    anything when that event is behind the resume point. Where it is is known by reading up
    to it first; a history longer than a page is then read again, a page at a time."""
    first: list[RunEvent] | None = None
    cut = None
    async for page in _stored_pages(store, run_id, after, _EVERY):
        first = page if first is None else first
        if (i := _ending(page)) is not None:
            cut = page[i].seq
            break
    if cut is None or first is None:
        return
    if first[-1].seq >= cut:  # all in the first page: no second read
        for event in first:
            if event.seq <= cut:
                yield event
        return
    async for page in _stored_pages(store, run_id, after, cut):
        for event in page:
            yield event


async def _pages(store: Store, run_id: str, after: int, upto: int) -> AsyncIterator[RunEvent]:
    async for page in _stored_pages(store, run_id, after, upto):
        for event in page:
            yield event


async def _live_events(
    store: Store, run_id: str, sub: Subscriber, last: int
) -> AsyncIterator[EventItem]:
    while True:
        for item in await sub.drain():
            if not isinstance(item, RunEvent):
                yield item
                return
            if item.seq > last:  # else already seen (or a resume point beyond it)
                last = item.seq
                yield item
            if _ends(item):
                final = await store.get_run(run_id)
                if final is not None:
                    yield _end(final, final.attempt)
                return
        if sub.lagged:
            yield Lagged(last)
            return


async def follow_events(
    hub: StreamHub, store: Store, run_id: str, after: int
) -> AsyncIterator[EventItem]:
    """Yield the run's events with seq > after; End once the run is in a terminal state."""
    sub, upto = await hub.subscribe_events(run_id)
    try:
        # An ended run's events are all stored (each written with the change it records); a
        # run not ended yet has those up to `upto` stored, the rest to come by `sub`.
        run = await store.get_run(run_id)
        if run is None:
            return
        ended = run.state.terminal
        last = after
        stored = (
            _ended_events(store, run_id, after) if ended else _pages(store, run_id, after, upto)
        )
        async for event in stored:
            yield event
            last = event.seq
            if hub.closed:
                yield Closed()
                return
        if ended:
            yield _end(run, run.attempt)
            return
        async for item in _live_events(store, run_id, sub, last):
            yield item
    finally:
        hub.unsubscribe_events(run_id, sub)

"""Who hears of runs ending here: `Prefer: wait` waiters, and the finish rate behind
Retry-After. Both are transition subscribers."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from typing import Any

from runyard.models import Run, RunState


class EndWaiters:
    """Requests waiting for a run to reach a terminal state."""

    def __init__(self) -> None:
        self._ended: dict[str, set[asyncio.Future[Run | None]]] = {}
        self.released = False

    async def wait_for_end(
        self,
        run_id: str,
        seconds: float,
        gone: Coroutine[Any, Any, object] | None = None,
        current: Callable[[], Awaitable[Run]] | None = None,
    ) -> Run | None:
        """The run as it ended here, once it has; None after `seconds`, once `gone` is done
        (the caller left), or when it ended on another server (only its id is heard of). The
        waiter is in place before the first suspension: a caller that holds the run's latest
        state and calls this without an await in between cannot miss its end. One that holds
        an older read (an idempotent replay's) gives `current`, which reads the run again
        once the waiter is in place: an end between the two reads is seen by one of them."""
        if self.released:  # shutting down: nobody is kept waiting any more
            _close(gone)
            return None
        with self.expecting(run_id) as future:
            try:
                now = await current() if current is not None else None
                # In place: one turn is let go first. A free slot claimed this run in its
                # insert's own transaction, and the dispatcher, woken with the submit, is
                # next: its step sends the spawn request, which then leaves before this wait.
                await asyncio.sleep(0)
            except BaseException:
                _close(gone)
                raise
            if now is not None and now.state.terminal:
                _close(gone)
                return now
            watch = None
            if gone is not None:
                watch = asyncio.create_task(gone)
                watch.add_done_callback(lambda _: _settle(future))
            try:
                async with asyncio.timeout(seconds):
                    return await future
            except TimeoutError:
                return None
            finally:
                # Gone with the request, not awaited: the answer goes out in this step, not
                # after a turn of the loop spent on the watch's cancellation (and on whatever
                # was queued before it, such as the end's log line). cancel() also marks an
                # error the watch ended with as retrieved.
                if watch is not None:
                    watch.cancel()

    @contextlib.contextmanager
    def expecting(self, run_id: str) -> Iterator[asyncio.Future[Run | None]]:
        """A future of the run's end, in place at once: read the run inside the block, and an
        end published after that read (even during it) sets the future. Once the waiters
        are released (shutting down) it is set at once: nothing would ever set it."""
        future: asyncio.Future[Run | None] = asyncio.get_running_loop().create_future()
        if self.released:
            future.set_result(None)
        waiters = self._ended.setdefault(run_id, set())
        waiters.add(future)
        try:
            yield future
        finally:
            waiters.discard(future)
            if not waiters and self._ended.get(run_id) is waiters:
                self._ended.pop(run_id, None)

    def ended(self, run_id: str, run: Run | None = None) -> None:
        """The run ended (here, as `run`, or on another server): wake whoever waits for it."""
        for waiter in self._ended.pop(run_id, set()):
            if not waiter.done():
                waiter.set_result(run)

    def on_transition(self, run: Run, previous: RunState) -> None:
        if run.state.terminal:
            self.ended(run.id, run)

    def release_all(self) -> None:
        """Shutting down: every waiter answers now with its run as it is (202), rather than
        be cut off as the server closes its connections; so does any that comes after."""
        self.released = True
        for waiters in self._ended.values():
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(None)


def _settle(future: asyncio.Future[Run | None]) -> None:
    if not future.done():
        future.set_result(None)


class FinishRate:
    """Runs finished per second, over the last (up to) 200 ends."""

    def __init__(self, window: int = 200) -> None:
        self._times: deque[float] = deque(maxlen=window)

    def on_transition(self, run: Run, previous: RunState) -> None:
        if run.state.terminal:
            self._times.append(time.monotonic())

    def per_second(self) -> float:
        if len(self._times) < 2:
            return 0.0
        span = self._times[-1] - self._times[0]
        return (len(self._times) - 1) / span if span > 0 else 0.0


def _close(gone: Coroutine[Any, Any, object] | None) -> None:
    """A watch that will never be started (its coroutine closed, never awaited)."""
    if gone is not None:
        gone.close()

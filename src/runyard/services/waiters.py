"""Who hears of runs ending here: `Prefer: wait` waiters, and the finish rate behind
Retry-After. Both are transition subscribers."""

from __future__ import annotations

import asyncio
import time
from collections import deque

from runyard.models import Run, RunState


class EndWaiters:
    """Requests waiting for a run to reach a terminal state."""

    def __init__(self) -> None:
        self._ended: dict[str, set[asyncio.Event]] = {}

    async def wait_for_end(self, run_id: str, seconds: float) -> None:
        """Return when the run reaches a terminal state, or after `seconds`."""
        event = asyncio.Event()
        waiters = self._ended.setdefault(run_id, set())
        waiters.add(event)
        try:
            async with asyncio.timeout(seconds):
                await event.wait()
        except TimeoutError:
            pass
        finally:
            waiters.discard(event)
            if not waiters:
                self._ended.pop(run_id, None)

    def ended(self, run_id: str) -> None:
        """The run ended (here or on another server): wake whoever waits for it here."""
        for waiter in self._ended.pop(run_id, set()):
            waiter.set()

    def on_transition(self, run: Run, previous: RunState) -> None:
        if run.state.terminal:
            self.ended(run.id)


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

"""Tasks owned by one component: a long-lived loop (`Background`) started once and cancelled
on stop, or short ones (`TaskGroup`) whose failures are logged and which stop awaits."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import structlog

from runyard.bad_days import expected, log_failure

log = structlog.get_logger(__name__)


class Background:
    def __init__(self, name: str) -> None:
        self.name = name
        self._task: asyncio.Task[None] | None = None

    def start(self, coro: Coroutine[Any, Any, None]) -> None:
        self._task = asyncio.create_task(coro, name=self.name)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None


class Periodic:
    """A sweep run every `interval_s` (retention, upload expiry, the cluster's heartbeat): a
    failure is logged as `failed` and the next turn comes all the same. Waiting on the clock
    is the point: a sweep looks at what time alone makes due, nothing it could be told
    about. `wait_first`: the first turn after one interval, not at start."""

    def __init__(
        self, name: str, interval_s: float, sweep: Callable[[], Awaitable[object]], *,
        wait_first: bool = False, failed: str = "sweep_failed",
    ) -> None:  # fmt: skip
        self.interval_s = interval_s
        self._sweep = sweep
        self._wait_first = wait_first
        self._failed = failed
        self._task = Background(name)

    def start(self) -> None:
        self._task.start(self._loop())

    async def stop(self) -> None:
        await self._task.stop()

    async def _loop(self) -> None:
        if self._wait_first:
            await asyncio.sleep(self.interval_s)
        while True:
            try:
                await self._sweep()
            except Exception as exc:
                log_failure(log, self._failed, exc, sweep=self._task.name)
            await asyncio.sleep(self.interval_s)


class TaskGroup:
    """Short tasks started on an event (an exit, a fire): kept referenced while they run, a
    failure logged under the group's name, all awaited (or cancelled) on stop."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._tasks: set[asyncio.Task[None]] = set()

    def start(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro, name=self.name)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            if expected(exc):  # a bad day's: one line, its cause
                log.warning("task_failed", group=self.name, error=str(exc)[:300])
            else:
                log.error("task_failed", group=self.name, exc_info=exc)

    def __len__(self) -> int:
        return len(self._tasks)

    async def wait(self) -> None:
        """Await every task running now (their failures are logged, not raised)."""
        for task in list(self._tasks):
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await task

    async def ended(self) -> None:
        """Once every task running now has ended. A cancel of the caller is raised here and
        never passed on to them (`wait`'s await would: a write they make would be dropped)."""
        if self._tasks:
            await asyncio.wait(list(self._tasks))

    async def cancel(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await self.wait()

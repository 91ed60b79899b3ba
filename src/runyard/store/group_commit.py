"""Group commit: the units of work that reach a single-connection store while its thread is
busy run together when it is free — every write of the group in one transaction, each in its
own savepoint, and every result handed back to the event loop in one wake-up.

Under load one BEGIN/COMMIT, one thread hand-off and one loop wake-up then serve many
submits, claims, starts and ends instead of one each. Nothing is acknowledged early: a write's
caller hears of it only after the COMMIT that made it durable, and a write that fails (its
own error, its failpoint) is rolled back to its savepoint alone, its neighbours unharmed.
Idle, a group is one unit and costs what a plain transaction did.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any

from runyard.store.units import Unit


@dataclass(slots=True)
class Pending:
    """One unit waiting for the store thread; `point` is its commit's failpoint (None: a read)."""

    unit: Unit[Any]
    point: str | None
    future: asyncio.Future[Any]
    value: Any = None
    # None once it succeeded; a unit the group never reached must not read as a success
    error: BaseException | None = field(default_factory=lambda: RuntimeError("never run"))

    def succeed(self, value: Any) -> None:
        self.value, self.error = value, None

    def fail(self, error: BaseException) -> None:
        self.value, self.error = None, error


def _deliver(group: list[Pending]) -> None:
    """On the event loop: every caller of the group hears its outcome."""
    for p in group:
        if p.future.done():  # its caller was cancelled while it ran
            continue
        if p.error is None:
            p.future.set_result(p.value)
        else:
            p.future.set_exception(p.error)


class GroupCommit:
    """Queues units for `run_group`, which runs on the store's one thread (`executor`)."""

    def __init__(self, executor: Executor, run_group: Callable[[list[Pending]], None]) -> None:
        self._executor = executor
        self._run_group = run_group
        self._lock = threading.Lock()
        self._queue: list[Pending] = []
        self._scheduled = False  # a drain is queued on, or running on, the store thread

    async def submit(self, unit: Unit[Any], point: str | None) -> Any:
        loop = asyncio.get_running_loop()
        pending = Pending(unit, point, loop.create_future())
        with self._lock:
            self._queue.append(pending)
            start = not self._scheduled
            self._scheduled = True
        if start:
            self._executor.submit(self._drain, loop)
        return await pending.future

    def _drain(self, loop: asyncio.AbstractEventLoop) -> None:
        """On the store thread: run what is queued as one group, then hand the thread back
        (other calls queued on it — ping, health — go between groups, never starved)."""
        with self._lock:
            group, self._queue = self._queue, []
        live = [p for p in group if not p.future.done()]
        try:
            self._run_group(live)
        except BaseException as exc:  # a bug in the driver: nobody may wait forever
            for p in live:
                p.fail(exc)
        with contextlib.suppress(RuntimeError):  # the loop closed: nobody is left to tell
            loop.call_soon_threadsafe(_deliver, live)
        with self._lock:
            again = self._scheduled = bool(self._queue)
        if again:
            self._executor.submit(self._drain, loop)

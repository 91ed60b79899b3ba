"""Waiting for a run to change without ever missing the change.

A waiter is armed when it is made, before its owner reads the run; a change signalled at any
moment after that (during the read, or while nobody waits) is kept until the next wait. An
event made only when somebody starts to wait would lose the change that lands between the
read and the wait: the lost wake-up that stalled a log stream until the run ended.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator


class ChangeWaiter:
    __slots__ = ("_event",)

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def notify(self) -> None:
        self._event.set()

    async def wait(self, timeout_s: float) -> None:
        """Return once the run changed since the last wait (at once if it already has), or
        after `timeout_s` to re-check regardless. The caller reads the state afterwards."""
        if not self._event.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout_s):
                    await self._event.wait()
        self._event.clear()  # before the caller's read: a change during that read is kept


class RunChanges:
    """The armed waiters of each run; they exist only while somebody follows the run."""

    def __init__(self) -> None:
        self._waiters: dict[str, set[ChangeWaiter]] = {}
        self.closed = False

    @contextlib.contextmanager
    def watch(self, run_id: str) -> Iterator[ChangeWaiter]:
        waiter = ChangeWaiter()
        if self.closed:
            waiter.notify()  # shutting down: whoever waits must look again, and stop
        self._waiters.setdefault(run_id, set()).add(waiter)
        try:
            yield waiter
        finally:
            waiters = self._waiters.get(run_id)
            if waiters is not None:
                waiters.discard(waiter)
                if not waiters:
                    del self._waiters[run_id]

    def notify(self, run_id: str) -> None:
        for waiter in self._waiters.get(run_id, ()):
            waiter.notify()

    def notify_all(self) -> None:
        """Every run may have changed: whoever waits reads its run again."""
        for waiters in self._waiters.values():
            for waiter in waiters:
                waiter.notify()

    def close(self) -> None:
        self.closed = True
        self.notify_all()

    def __len__(self) -> int:
        return sum(len(w) for w in self._waiters.values())

"""Group commit: the units of work that reach a single-connection store while its thread is
busy run together when it is free — every write of the group in one transaction, and every
result handed back to the event loop in one wake-up.

Under load one BEGIN/COMMIT, one thread hand-off and one loop wake-up then serve many
submits, claims, starts and ends instead of one each. Nothing is acknowledged early: a write's
caller hears of it only after the COMMIT that made it durable, and a write that fails (its
own error, its failpoint) fails alone, its neighbours unharmed (the store runs them again).
Idle, a group is one unit and costs what a plain transaction did.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from queue import Empty, SimpleQueue
from typing import Any, TypeVar, cast

from runyard.errors import StoreBusyError
from runyard.store.units import Make

T = TypeVar("T")


@dataclass(slots=True)
class Pending:
    """One unit waiting for the store thread, as the maker of it (a group that has to undo
    everything runs it again); `point` is its commit's failpoint (None: a read). Or, with
    `call`, a plain function of the thread's own (open, close, ping) run alone."""

    make: Make[Any] | None
    point: str | None
    future: asyncio.Future[Any]
    call: Callable[[], Any] | None = None
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


def _tell(batch: list[Pending]) -> None:
    """From any thread: every caller of the batch hears its outcome on its own loop (one in
    a server; a store shared by several loops tells each its own)."""
    by_loop: dict[asyncio.AbstractEventLoop, list[Pending]] = {}
    for p in batch:
        by_loop.setdefault(p.future.get_loop(), []).append(p)
    for loop, told in by_loop.items():
        with contextlib.suppress(RuntimeError):  # the loop closed: nobody is left to tell
            loop.call_soon_threadsafe(_deliver, told)


_STOP = object()


class GroupCommit:
    """The store's one thread: runs what is queued for it, units as groups (`run_group`).

    A thread of its own fed by a SimpleQueue rather than an executor: handing it a unit is
    one C-level put, not a future and a work item per unit."""

    def __init__(self, run_group: Callable[[list[Pending]], None], name: str) -> None:
        self._run_group = run_group
        self._queue: SimpleQueue[list[Pending] | object] = SimpleQueue()
        # What this turn of the event loop asked for, handed over together when it ends: a
        # submit that wakes the dispatcher, and the claim that wakes, share a transaction.
        self._this_turn: list[Pending] = []
        self._closing = False  # stop() has begun: nothing new is taken
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self._thread.start()

    async def submit(self, make: Make[Any], point: str | None) -> Any:
        return await self._enqueue(Pending(make, point, self._future()))

    async def call(self, fn: Callable[[], T]) -> T:
        """`fn` on the store thread, alone, in its place between groups."""
        return cast(T, await self._enqueue(Pending(None, None, self._future(), call=fn)))

    @staticmethod
    def _future() -> asyncio.Future[Any]:
        return asyncio.get_running_loop().create_future()

    def _enqueue(self, pending: Pending) -> asyncio.Future[Any]:
        if self._closing:  # the thread may be gone already: nobody would ever answer
            pending.future.set_exception(StoreBusyError("the store is closed"))
            return pending.future
        if not self._this_turn:
            pending.future.get_loop().call_soon(self._hand_over)
        self._this_turn.append(pending)
        return pending.future

    def _hand_over(self) -> None:
        batch, self._this_turn = self._this_turn, []
        if batch:  # stop() may have handed this turn over already
            self._queue.put(batch)

    async def stop(self) -> None:
        """After what is queued has run (this turn's too): the thread ends. Whatever is asked
        meanwhile, or would land behind the end, is refused, never left unanswered."""
        self._closing = True
        self._hand_over()
        self._queue.put(_STOP)
        await asyncio.to_thread(self._thread.join)
        with contextlib.suppress(Empty):
            while True:
                left = self._queue.get_nowait()
                if isinstance(left, list):
                    for p in left:
                        p.fail(StoreBusyError("the store is closed"))
                    _tell(left)

    def _serve(self) -> None:
        while True:
            handed = [self._queue.get()]
            with contextlib.suppress(Empty):
                while True:  # everything handed over meanwhile joins this turn
                    handed.append(self._queue.get_nowait())
            self._turn([p for batch in handed if isinstance(batch, list) for p in batch])
            if _STOP in handed:
                return

    def _turn(self, batch: list[Pending]) -> None:
        units: list[Pending] = []
        for p in batch:
            if p.future.done():
                continue
            if p.call is None:
                units.append(p)
                continue
            self._group(units)
            units = []
            try:
                p.succeed(p.call())
            except Exception as exc:
                p.fail(exc)
        self._group(units)
        _tell(batch)

    def _group(self, units: list[Pending]) -> None:
        if not units:
            return
        try:
            self._run_group(units)
        except BaseException as exc:  # a bug in the driver: nobody may wait forever
            for p in units:
                p.fail(exc)

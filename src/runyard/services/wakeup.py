"""A wake-up call: one side waits for it, anyone may give it. Built before both sides, so
who gives it needs no reference to who waits (the dispatcher's queue, health, reconcile)."""

from __future__ import annotations

import asyncio


class Wakeup:
    def __init__(self) -> None:
        self._event = asyncio.Event()

    def set(self) -> None:
        self._event.set()

    def clear(self) -> None:
        self._event.clear()

    def is_set(self) -> bool:
        return self._event.is_set()

    async def wait(self) -> None:
        await self._event.wait()


class QueueWakeup(Wakeup):
    """The dispatcher's wake-up call, which also knows when a freed slot is not worth one.

    Every `set` starts a new generation. A claim that took fewer runs than it had room for,
    with no job's concurrency limit in play, on a store whose claims see every queued run
    (SQLite: `Store.claims_see_every_run`), found the queue dry: it marks the generation it
    began in as `drained`. Until anything sets the queue again (a submit, a retry, a backoff
    due, another server's notice), a slot given back could take nothing, so an attempt's end
    does not wake the dispatcher for a claim that would find nothing: one store transaction
    and one loop-thread round trip fewer per run whenever the queue runs dry, and the next
    submit's claim shares its insert's transaction again instead of queueing behind it."""

    def __init__(self) -> None:
        super().__init__()
        self.generation = 0
        self._drained = -1
        # Whether a run may have been queued to wait out a backoff since the dispatcher last
        # read when the next one is due (`due_stale`). Only a retry's re-queue (here or, in a
        # cluster, on another server) sets a `not_before`; a submit, a batch or a freed slot
        # does not, so their wake-ups (`set_claimable`, `slot_freed`) leave the earliest due
        # time as it was read, and the dispatcher skips that read: one store read less per
        # claim on the hot path.
        self.due_stale = True

    def set(self) -> None:
        """Anything may have changed, the earliest backoff included."""
        self.due_stale = True
        self.set_claimable()

    def set_claimable(self) -> None:
        """New runs, claimable now (a submit, a batch): no backoff was added."""
        self.generation += 1
        super().set()

    def drained(self, generation: int) -> None:
        self._drained = generation

    @property
    def may_have_runs(self) -> bool:
        """False while the queue is known dry (nothing set it since a claim found it so)."""
        return self._drained != self.generation

    def slot_freed(self) -> None:
        if self.may_have_runs:
            self.set_claimable()

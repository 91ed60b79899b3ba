"""Retention: finished runs (records and files) removed after their TTL, in the background.

A job's `retention_s` wins over the server's; without either, runs are kept. Only terminal
runs are ever considered, so an active run is never touched. The store lists only what has
expired (an index of each run's expiry), not every finished run a sweep keeps.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import structlog

from runyard.background import Periodic
from runyard.clock import Clock
from runyard.services.removal import FilesRemainError, Removal
from runyard.services.runs import Announcer
from runyard.store import Store

log = structlog.get_logger(__name__)
BATCH = 500


# a store's listing of removable runs: (bound, limit, after its (key, id)) -> [(id, key)]
Listing = Callable[[float, int, tuple[float, str] | None], Awaitable[list[tuple[str, float]]]]


class Retention:
    def __init__(
        self,
        store: Store,
        removal: Removal,
        clock: Clock,
        *,
        default_s: float | None,
        interval_s: float,
        server_id: str | None = None,
        announce: Announcer | None = None,
    ) -> None:
        self.announce: Announcer = announce or (lambda kind, data: None)  # the feed's `deleted`
        self.server_id = server_id  # in a cluster, each server removes the runs it executed
        self.store = store
        self.removal = removal
        self.clock = clock
        self.default_s = default_s
        self.interval_s = interval_s
        self.removed_total = 0
        self._periodic = Periodic("retention", interval_s, self.sweep)

    def start(self) -> None:
        self._periodic.start()

    async def stop(self) -> None:
        await self._periodic.stop()

    async def _mine(self, run_id: str) -> bool:
        """Its files are on this server's disk (or it never ran): removing it here removes
        everything. Another server's run is left to that server."""
        if self.server_id is None:
            return True
        attempts = await self.store.get_attempts(run_id)
        return not attempts or attempts[-1].host == self.server_id

    async def _remove(self, run_id: str) -> bool | None:
        """True: removed; False: somebody else removed the record; None: kept, its files
        could not be set aside (tried again at the next sweep)."""
        try:
            removed = await self.removal.delete(run_id)
        except FilesRemainError:
            return None
        if removed:
            self.announce("deleted", {"id": run_id})
        return removed

    async def sweep(self) -> int:
        """Remove every finished run past its TTL; returns how many were removed. First, what
        earlier deletes could not remove from the trash. A run's TTL is its job's as the run
        stored it (a job removed or changed since keeps its runs' TTLs), else the server's."""
        await self.removal.empty_trash()
        now = self.clock.now()
        removed = await self._remove_listed(self.store.expired, now)
        if self.default_s is not None:
            removed += await self._remove_listed(self.store.untimed_before, now - self.default_s)
        if removed:
            self.removed_total += removed
            log.info("retention_removed", runs=removed)
        return removed

    async def _remove_listed(self, listed: Listing, bound: float) -> int:
        """Every run `listed` up to `bound` removed, page by page; how many were. A run left
        (another server's, or its files would not go) is paged past, tried at the next sweep."""
        removed = 0
        after: tuple[float, str] | None = None
        while True:
            page = await listed(bound, BATCH, after)
            for run_id, _ in page:
                if await self._mine(run_id):
                    removed += await self._remove(run_id) is True  # None: its files stayed
            if len(page) < BATCH:
                return removed
            after = (page[-1][1], page[-1][0])

"""Retention: finished runs (records and files) removed after their TTL, in the background.

A job's `retention_s` wins over the server's; without either, runs are kept. Only terminal
runs are ever considered, so an active run is never touched.
"""

from __future__ import annotations

from typing import Any

import structlog

from runyard.background import Periodic
from runyard.clock import Clock
from runyard.jobs import JobRegistry
from runyard.services.removal import FilesRemainError, Removal
from runyard.services.runs import Announcer
from runyard.store import Store

log = structlog.get_logger(__name__)
BATCH = 500


def ttl_of(spec: dict[str, Any], default: float | None) -> float | None:
    value = spec.get("retention_s")
    return float(value) if isinstance(value, int | float) else default


class Retention:
    def __init__(
        self,
        store: Store,
        removal: Removal,
        registry: JobRegistry,
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
        self.registry = registry
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
        earlier deletes could not remove from the trash."""
        await self.removal.empty_trash()
        jobs = (await self.registry.snapshot()).jobs.values()
        ttls = [j.spec.retention_s for j in jobs if j.spec.retention_s] + [self.default_s]
        shortest = min((t for t in ttls if t), default=None)
        if shortest is None:
            return 0
        now = self.clock.now()
        removed = 0
        after: tuple[float, str] | None = None
        while True:  # oldest first; runs kept by a longer job TTL are paged past, once
            page = await self.store.finished_before(now - shortest, BATCH, after)
            if page:
                after = (page[-1][2], page[-1][0])
            for run_id, spec, finished_at in page:
                ttl = ttl_of(spec, self.default_s)
                if ttl is not None and finished_at < now - ttl and await self._mine(run_id):
                    # None: its files would not go: kept, tried again at the next sweep
                    removed += await self._remove(run_id) is True
            if len(page) < BATCH:
                break
        if removed:
            self.removed_total += removed
            log.info("retention_removed", runs=removed)
        return removed

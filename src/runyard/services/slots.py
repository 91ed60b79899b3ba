"""Slots: what runs on this server, counted per job, against its capacity and each job's
concurrency. Taken when an attempt is claimed, given back when its end is recorded."""

from __future__ import annotations

import asyncio
from collections import Counter

from runyard.store import Store


class Slots:
    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.running: Counter[str] = Counter()
        self._held: dict[str, str] = {}  # attempt keys counted in `running`, and their job
        self._idle = asyncio.Event()
        # while `load` reads: the attempts whose end was recorded meanwhile (they may be in
        # what it read, and nobody would give their slots back)
        self._ended_while_loading: set[str] | None = None

    @property
    def active(self) -> int:
        return sum(self.running.values())

    @property
    def free(self) -> int:
        return self.capacity - self.active

    async def load(self, store: Store, host: str) -> None:
        """Count what this server already runs (attempts adopted at start): one read of the
        attempts with their jobs, less those whose end was recorded while it was read (a
        reconcile at start settles adopted attempts meanwhile)."""
        self._ended_while_loading = set()
        try:
            found = await store.held_attempts(host)
        finally:
            ended, self._ended_while_loading = self._ended_while_loading, None
        self._held = {key: job for key, job in found if key not in ended}
        self.running = Counter(self._held.values())
        if not self.active:
            self._idle.set()

    def job_room(self, concurrency: dict[str, int]) -> dict[str, int]:
        """Per job with a concurrency limit: how many more of its runs may start."""
        return {job: limit - self.running[job] for job, limit in concurrency.items()}

    def take(self, job: str, key: str) -> None:
        self._idle.clear()
        self._held[key] = job
        self.running[job] += 1

    def holds(self, key: str) -> bool:
        return key in self._held

    def give_back(self, key: str) -> bool:
        """Release the attempt's slot; False if it held none (not counted here)."""
        job = self._held.pop(key, None)
        if job is None:
            if self._ended_while_loading is not None:
                self._ended_while_loading.add(key)
            return False
        self.running[job] -= 1
        if self.running[job] <= 0:
            del self.running[job]
        if not self.active:
            self._idle.set()
        return True

    async def idle(self) -> None:
        """Return once nothing is running."""
        await self._idle.wait()

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
        self._held: set[str] = set()  # attempt keys counted in `running`
        self._idle = asyncio.Event()

    @property
    def active(self) -> int:
        return sum(self.running.values())

    @property
    def free(self) -> int:
        return self.capacity - self.active

    async def load(self, store: Store, host: str) -> None:
        """Count what this server already runs (attempts adopted at start)."""
        self.running = Counter(await store.count_active_by_job(host))
        self._held = {a.key for a in await store.active_attempts(host)}
        if not self.active:
            self._idle.set()

    def job_room(self, concurrency: dict[str, int]) -> dict[str, int]:
        """Per job with a concurrency limit: how many more of its runs may start."""
        return {job: limit - self.running[job] for job, limit in concurrency.items()}

    def take(self, job: str, key: str) -> None:
        self._idle.clear()
        self._held.add(key)
        self.running[job] += 1

    def holds(self, key: str) -> bool:
        return key in self._held

    def give_back(self, job: str, key: str) -> bool:
        """Release the attempt's slot; False if it held none (not counted here)."""
        if key not in self._held:
            return False
        self._held.discard(key)
        self.running[job] -= 1
        if self.running[job] <= 0:
            del self.running[job]
        if not self.active:
            self._idle.set()
        return True

    async def idle(self) -> None:
        """Return once nothing is running."""
        await self._idle.wait()

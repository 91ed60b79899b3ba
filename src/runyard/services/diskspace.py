"""Free space in the data directory: submissions are refused (507) before the disk fills."""

from __future__ import annotations

import asyncio
import shutil
import time
from pathlib import Path

from runyard.errors import StorageFullError


class DiskGuard:
    """Checks at most every `ttl_s` (off the event loop) while there is room; between checks
    that answer holds. Short of room, every check looks again: a refusal must stop as soon as
    space is freed, not up to `ttl_s` later. Checks made while a look is under way share it, so
    a flood of refused submissions costs one statvfs at a time, not one thread job each."""

    def __init__(self, path: Path, min_free_bytes: int, ttl_s: float = 1.0) -> None:
        self.path = path
        self.min_free_bytes = min_free_bytes
        self.ttl_s = ttl_s
        self._free: int | None = None
        self._checked_at = float("-inf")
        self._looking: asyncio.Future[int] | None = None

    async def free_bytes(self) -> int:
        stale = time.monotonic() - self._checked_at >= self.ttl_s
        if self._free is not None and self._free >= self.min_free_bytes and not stale:
            return self._free
        if self._looking is None:
            self._looking = asyncio.ensure_future(self._look())
        # shielded: a caller that leaves (its client went away) does not end the others' look
        return await asyncio.shield(self._looking)

    async def _look(self) -> int:
        try:
            self._free = (await asyncio.to_thread(shutil.disk_usage, self.path)).free
            self._checked_at = time.monotonic()
            return self._free
        finally:
            self._looking = None

    async def check(self, writing: int = 0) -> None:
        """StorageFullError unless `writing` bytes leave min_free_mb free."""
        free = await self.free_bytes()
        if free < self.min_free_bytes:
            raise StorageFullError(
                f"the data directory has {free // 2**20} MiB free, under min_free_mb "
                f"({self.min_free_bytes // 2**20} MiB); new runs are refused until space is freed",
                free_bytes=free,
            )
        if free - writing < self.min_free_bytes:
            raise StorageFullError(
                f"this would write about {-(-writing // 2**20)} MiB, of the "
                f"{free // 2**20} MiB the data directory has free, leaving under min_free_mb "
                f"({self.min_free_bytes // 2**20} MiB); nothing was stored",
                free_bytes=free,
            )

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
    space is freed, not up to `ttl_s` later (refusals are rare, and a look costs one statvfs)."""

    def __init__(self, path: Path, min_free_bytes: int, ttl_s: float = 1.0) -> None:
        self.path = path
        self.min_free_bytes = min_free_bytes
        self.ttl_s = ttl_s
        self._free: int | None = None
        self._checked_at = float("-inf")

    async def free_bytes(self) -> int:
        stale = time.monotonic() - self._checked_at >= self.ttl_s
        if self._free is None or self._free < self.min_free_bytes or stale:
            self._free = (await asyncio.to_thread(shutil.disk_usage, self.path)).free
            self._checked_at = time.monotonic()
        return self._free

    async def check(self) -> None:
        free = await self.free_bytes()
        if free < self.min_free_bytes:
            raise StorageFullError(
                f"the data directory has {free // 2**20} MiB free, under min_free_mb "
                f"({self.min_free_bytes // 2**20} MiB); new runs are refused until space is freed",
                free_bytes=free,
            )

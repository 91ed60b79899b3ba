"""Time and identifiers, injectable so tests can control them."""

from __future__ import annotations

import os
import threading
import time
from datetime import UTC, datetime
from typing import Protocol

from ulid import ULID


class Clock(Protocol):
    def now(self) -> float: ...


class SystemClock:
    def now(self) -> float:
        return time.time()


class _MonotonicIds:
    """ULIDs that sort in the order they were made, even within one millisecond (the next
    id in the same millisecond is the previous one plus one), so FIFO by id is exact.

    The 80 random bits come from the OS's generator, read 256 ids' worth at a time: one
    system call per 256 ids rather than one per id (one is made per run)."""

    _BATCH = 256

    def __init__(self) -> None:
        self._last = 0
        self._lock = threading.Lock()
        self._pool = b""
        self._at = 0

    def _random80(self) -> int:
        if self._at >= len(self._pool):
            self._pool, self._at = os.urandom(10 * self._BATCH), 0
        chunk = self._pool[self._at : self._at + 10]
        self._at += 10
        return int.from_bytes(chunk, "big")

    def __call__(self) -> str:
        with self._lock:
            candidate = (time.time_ns() // 1_000_000) << 80 | self._random80()
            if candidate >> 80 == self._last >> 80 and candidate <= self._last:
                candidate = self._last + 1
            self._last = candidate
        return str(ULID.from_int(candidate))


new_id = _MonotonicIds()


def isoformat(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")

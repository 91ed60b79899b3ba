"""The supervisor's timer heap: timeouts, kill graces, lease expiries and exit-file retries."""

from __future__ import annotations

import heapq
import itertools
import time
from collections.abc import Iterator


class Timers:
    """(deadline, kind, key) on the monotonic clock, fired in deadline order."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, str, str]] = []
        self._seq = itertools.count()  # ties fire in the order they were added

    def add(self, delay: float, kind: str, key: str) -> None:
        heapq.heappush(self._heap, (time.monotonic() + delay, next(self._seq), kind, key))

    def due(self, now: float) -> Iterator[tuple[str, str]]:
        """Pop and yield each timer due by `now`, including any added while iterating."""
        while self._heap and self._heap[0][0] <= now:
            _, _, kind, key = heapq.heappop(self._heap)
            yield kind, key

    def wait_s(self, now: float) -> float | None:
        """Seconds until the next timer (0 if one is due), None if there is none."""
        return max(0.0, self._heap[0][0] - now) if self._heap else None

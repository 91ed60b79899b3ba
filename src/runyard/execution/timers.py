"""The supervisor's timer heap: timeouts, kill graces, lease expiries and exit-file retries."""

from __future__ import annotations

import heapq
import itertools
import time
from collections.abc import Iterator

# The longest the supervisor waits in one select: epoll takes at most 2^31 - 1 ms (24.8 days),
# and a job's timeout_s of 35 days raised OverflowError out of the loop (the supervisor gone,
# every run's program lost). A timer further off is waited for in turns.
MAX_WAIT_S = 3600.0


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
        """Seconds until the next timer (0 if one is due), None if there is none; at most
        MAX_WAIT_S, after which the loop asks again."""
        if not self._heap:
            return None
        return min(MAX_WAIT_S, max(0.0, self._heap[0][0] - now))

"""A launch the executor refused for a reason not the run's: how long the run waits before it
is claimed again, and the hold on every claim while the executor starts nothing at all."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

UNAVAILABLE_RETRY_S = 1.0  # a run not started for a reason not its own waits this at first,
UNAVAILABLE_RETRY_MAX_S = 60.0  # doubling at each attempt to at most this


def unavailable_retry_s(attempt: int) -> float:
    """How long a run whose attempt `attempt` was not started for a reason not its own (the
    executor away, the disk full) waits before it is claimed again. A fault that lasts costs
    each run an attempt a minute, not one a second: its attempts, each listed with the run,
    stay few."""
    return min(
        UNAVAILABLE_RETRY_MAX_S, UNAVAILABLE_RETRY_S * float(2 ** min(max(attempt - 1, 0), 10))
    )


class ExecutorHold:
    """Claims held while the executor starts nothing, whatever the run (ExecutorHeldError: a
    supervisor whose warden is gone, until it is replaced): each queued run was claimed,
    refused and re-queued all the while, an attempt a minute each (a probe: 1,440 a day a
    run, and the run shown running at each). Held until `clear` (the executor replaced) or
    UNAVAILABLE_RETRY_MAX_S, after which one claim tries again."""

    def __init__(self, wake: Callable[[], None]) -> None:
        self._wake = wake  # the dispatcher's: claims are looked at again
        self._until = 0.0

    def begin(self, now: float) -> None:
        self._until = now + UNAVAILABLE_RETRY_MAX_S
        asyncio.get_running_loop().call_later(UNAVAILABLE_RETRY_MAX_S, self._wake)

    def clear(self) -> None:
        self._until = 0.0

    def holds(self, now: float) -> bool:
        return now < self._until

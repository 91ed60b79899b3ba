"""One watcher's bounded buffer: a watcher that falls behind is dropped, never waited for."""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class Chunk:
    start: int  # byte offset of data[0] in the log
    data: bytes

    @property
    def end(self) -> int:
        return self.start + len(self.data)


@dataclass(frozen=True, slots=True)
class Following:
    """First item of a log stream: the attempt it follows (pin it when resuming)."""

    attempt: int


@dataclass(frozen=True, slots=True)
class End:
    """The attempt (logs) or the run (events) is over; `state` is the run's state then."""

    state: str
    attempt: int
    exit_code: int | None
    reason: str | None


@dataclass(frozen=True, slots=True)
class Lagged:
    """The watcher fell behind and was dropped; it may resume from its last id."""

    last_id: int


@dataclass(frozen=True, slots=True)
class Closed:
    """The server is shutting down."""


@dataclass(eq=False)
class Subscriber:
    max_bytes: int
    items: deque[Any] = field(default_factory=deque)
    size: int = 0
    lagged: bool = False
    ready: asyncio.Event = field(default_factory=asyncio.Event)

    def offer(self, item: Any, nbytes: int = 256) -> bool:
        """Queue without ever blocking; False (and lagged) when the buffer is full."""
        if self.lagged:
            return False
        if self.size + nbytes > self.max_bytes and self.items:
            self.lagged = True
            self.ready.set()
            return False
        self.items.append(item)
        self.size += nbytes
        self.ready.set()
        return True

    def lag(self) -> None:
        """Dropped although its buffer has room: what it missed cannot be told item by item."""
        self.lagged = True
        self.ready.set()

    def close(self, item: Any) -> None:
        """Always delivered (it does not count against the bound): End or Closed."""
        self.items.append(item)
        self.ready.set()

    async def drain(self) -> list[Any]:
        """Wait for something, then take everything queued."""
        await self.ready.wait()
        self.ready.clear()
        out = list(self.items)
        self.items.clear()
        self.size = 0
        return out

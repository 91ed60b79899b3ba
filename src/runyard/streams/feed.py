"""The feed: one stream of what changes across all runs, for overviews (the dashboard's runs
table, a terminal monitor) that would otherwise poll or open a stream per run.

It carries notifications, not history: a watcher that falls behind is dropped with `lagged`
and re-reads the list, which is the truth; the per-run event streams stay the resumable,
sequence-numbered record.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from runyard.streams.subscriber import Closed, Lagged, Subscriber


@dataclass(frozen=True, slots=True)
class FeedItem:
    kind: str  # run (a state change), submitted, batch, progress
    data: dict[str, Any]


class RunFeed:
    def __init__(self, max_buffer_bytes: int) -> None:
        self.max_buffer_bytes = max_buffer_bytes
        self.subscribers: set[Subscriber] = set()
        self.lagged_total = 0
        self.closed = False

    def __bool__(self) -> bool:
        return bool(self.subscribers)

    def offer(self, kind: str, data: dict[str, Any]) -> None:
        if not self.subscribers:
            return
        item = FeedItem(kind, data)
        size = 64 + len(json.dumps(data, default=str))
        for sub in list(self.subscribers):
            if not sub.offer(item, size):
                self.subscribers.discard(sub)
                self.lagged_total += 1

    def subscribe(self) -> Subscriber:
        sub = Subscriber(self.max_buffer_bytes)
        if self.closed:
            sub.close(Closed())  # shutting down: told at once, never added
        else:
            self.subscribers.add(sub)
        return sub

    def unsubscribe(self, sub: Subscriber) -> None:
        self.subscribers.discard(sub)

    def resync(self) -> None:
        """What changed may have been missed (the cluster's listener reconnected): every
        watcher is dropped with `lagged`, and re-reads the list, which is the truth."""
        for sub in self.subscribers:
            sub.lag()
        self.lagged_total += len(self.subscribers)
        self.subscribers.clear()

    def close(self) -> None:
        self.closed = True
        for sub in self.subscribers:
            sub.close(Closed())
        self.subscribers.clear()

    async def follow(self, sub: Subscriber) -> AsyncIterator[FeedItem | Lagged | Closed]:
        try:
            while True:
                for item in await sub.drain():
                    yield item
                    if isinstance(item, Closed):
                        return
                if sub.lagged:
                    yield Lagged(0)
                    return
        finally:
            self.unsubscribe(sub)
